// Conformance cases for the elementwise activations: gelu_forward / gelu_backward, relu_forward /
// relu_backward (one set of shapes, edge cases and modes for both).
#pragma once
#include <limits>
#include <string>
#include <utility>

#include "blip2/nn/gelu.hpp"
#include "blip2/nn/relu.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

template <class Ops>
void add_activation_cases(std::vector<op_case>& cases) {
  const std::string fwd = std::string(Ops::name) + "_forward", bwd = std::string(Ops::name) + "_backward";
  // (R, C); rank3 views the same data as (2, R / 2, C) to check that any rank is accepted
  struct shape { index_t R, C; bool nan, rank3; };
  for (const shape& s : {shape{1, 1, false, false}, shape{5, 7, false, false}, shape{7, 13, false, false},
                         shape{13, 5, false, false}, shape{8, 13, false, true}, shape{32, 3072, false, false},
                         shape{7, 13, true, false}}) {
    const index_t R = s.R, C = s.C;
    const bool nan = s.nan, rank3 = s.rank3;
    auto init_inputs = [=](io<double>& x) {
      rng r(R * 31 + C);
      x.make("inp", {R, C}, [&](index_t) { return r.normal(2.5); });  // tails out to about +-8
      if (nan) {
        x.fbuf("inp").data[C * (R / 2) + 1] = std::numeric_limits<double>::quiet_NaN();
        x.fbuf("inp").data[0] = std::numeric_limits<double>::quiet_NaN();
      }
      x.make("out", {R, C}, [](index_t) { return 0.0; });
    };
    auto r3 = [=](auto v) {  // (R, C) -> (2, R / 2, C)
      return tensor_view<typename decltype(v)::element_type, 3, typename decltype(v)::memory_space_type>(v.data(), {2, R / 2, C});
    };
    auto forward = [=](auto& be, auto& x) {
      if (rank3)
        Ops::forward(be, r3(x.template out<2>("out")), r3(x.template in<2>("inp")));
      else
        Ops::forward(be, x.template out<2>("out"), x.template in<2>("inp"));
    };
    const std::string extra = std::string(rank3 ? "rank3" : "") + (nan ? "nan" : "");
    cases.push_back(make_case(fwd, describe(fwd, {{"R", R}, {"C", C}}, extra), init_inputs,
                              {"out"}, forward));
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [=](io<double>& x) {
        init_inputs(x);
        rng r(R * 5 + C);
        x.make("dout", {R, C}, r.normals());
        x.make("dinp", {R, C}, r.normals());  // pre-filled in both modes: assign must overwrite it
      };
      auto backward = [=](auto& be, auto& x) {
        if (rank3)
          Ops::backward(be, r3(x.template out<2>("dinp")), r3(x.template in<2>("dout")), r3(x.template in<2>("inp")),
                        mode);
        else
          Ops::backward(be, x.template out<2>("dinp"), x.template in<2>("dout"), x.template in<2>("inp"), mode);
      };
      const std::string m = mode == grad_write::accumulate ? "accumulate" : "assign";
      cases.push_back(make_case(bwd,
                                describe(bwd, {{"R", R}, {"C", C}}, m + (extra.empty() ? "" : "," + extra)),
                                init, {"dinp"}, backward));
    }
  }
}

struct gelu_ops {
  static constexpr const char* name = "gelu";
  template <class... A>
  static void forward(A&&... a) { gelu_forward(std::forward<A>(a)...); }
  template <class... A>
  static void backward(A&&... a) { gelu_backward(std::forward<A>(a)...); }
};
struct relu_ops {
  static constexpr const char* name = "relu";
  template <class... A>
  static void forward(A&&... a) { relu_forward(std::forward<A>(a)...); }
  template <class... A>
  static void backward(A&&... a) { relu_backward(std::forward<A>(a)...); }
};

inline void add_activation_cases(std::vector<op_case>& cases) {
  add_activation_cases<gelu_ops>(cases);
  add_activation_cases<relu_ops>(cases);
}

}  // namespace blip2::testing
