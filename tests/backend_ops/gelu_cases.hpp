// Conformance cases for gelu_forward / gelu_backward.
#pragma once
#include <limits>

#include "blip2/nn/gelu.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_gelu_cases(std::vector<op_case>& cases) {
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
      return tensor_view<typename decltype(v)::element_type, 3>(v.data(), {2, R / 2, C});
    };
    auto forward = [=](auto& be, auto& x) {
      if (rank3)
        gelu_forward(be, r3(x.template out<2>("out")), r3(x.template in<2>("inp")));
      else
        gelu_forward(be, x.template out<2>("out"), x.template in<2>("inp"));
    };
    const std::string extra = std::string(rank3 ? "rank3" : "") + (nan ? "nan" : "");
    cases.push_back(make_case("gelu_forward", describe("gelu_forward", {{"R", R}, {"C", C}}, extra), init_inputs,
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
          gelu_backward(be, r3(x.template out<2>("dinp")), r3(x.template in<2>("dout")), r3(x.template in<2>("inp")),
                        mode);
        else
          gelu_backward(be, x.template out<2>("dinp"), x.template in<2>("dout"), x.template in<2>("inp"), mode);
      };
      const std::string m = mode == grad_write::accumulate ? "accumulate" : "assign";
      cases.push_back(make_case("gelu_backward",
                                describe("gelu_backward", {{"R", R}, {"C", C}}, m + (extra.empty() ? "" : "," + extra)),
                                init, {"dinp"}, backward));
    }
  }
}

}  // namespace blip2::testing
