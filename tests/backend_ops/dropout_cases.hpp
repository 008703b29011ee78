// Conformance cases for dropout_forward / dropout_backward. (The kept fraction and the independence of
// the mask from the thread count are checked in test_dropout_rng.cpp.)
#pragma once
#include <cstdint>
#include <sstream>

#include "blip2/nn/dropout.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_dropout_cases(std::vector<op_case>& cases) {
  auto p_text = [](double p) {
    std::ostringstream os;
    os << "p=" << p;
    return os.str();
  };
  struct shape { index_t R, C; int percent; bool backward; };
  for (const shape& s : {shape{1, 13, 10, false}, shape{5, 7, 0, true}, shape{7, 13, 10, true}, shape{13, 5, 50, true},
                         shape{64, 768, 10, false}}) {
    const index_t R = s.R, C = s.C;
    const double p = s.percent / 100.0;
    const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(R * C);
    auto init_inputs = [=](io<double>& x) {
      rng r(R * 13 + C);
      x.make("inp", {R, C}, r.normals());
      x.make("out", {R, C}, r.normals());  // pre-filled: dropped elements must be written as 0
    };
    auto forward = [=](auto& be, auto& x) {
      dropout_forward(be, x.template out<2>("out"), x.template in<2>("inp"), p, seed);
    };
    cases.push_back(make_case("dropout_forward", describe("dropout_forward", {{"R", R}, {"C", C}}, p_text(p)),
                              init_inputs, {"out"}, forward));
    if (!s.backward) continue;
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [=](io<double>& x) {
        rng r(R * 3 + C);
        x.make("dout", {R, C}, r.normals());
        x.make("dinp", {R, C}, r.normals());  // pre-filled in both modes: assign must overwrite it
      };
      auto backward = [=](auto& be, auto& x) {
        dropout_backward(be, x.template out<2>("dinp"), x.template in<2>("dout"), p, seed, mode);
      };
      const std::string m = mode == grad_write::accumulate ? "accumulate" : "assign";
      cases.push_back(make_case("dropout_backward",
                                describe("dropout_backward", {{"R", R}, {"C", C}}, p_text(p) + "," + m), init,
                                {"dinp"}, backward));
    }
  }
  // a (2, 7, 13) tensor: the flat index runs over all three dimensions
  {
    const std::uint64_t seed = 77;
    auto init = [](io<double>& x) {
      rng r(2713);
      x.make("inp", {2, 7, 13}, r.normals());
      x.make("out", {2, 7, 13}, r.normals());
    };
    auto forward = [=](auto& be, auto& x) {
      dropout_forward(be, x.template out<3>("out"), x.template in<3>("inp"), 0.5, seed);
    };
    cases.push_back(make_case("dropout_forward",
                              describe("dropout_forward", {{"B", 2}, {"T", 7}, {"C", 13}}, p_text(0.5)),
                              init, {"out"}, forward));
  }
}

}  // namespace blip2::testing
