// Finite-difference checks for dropout_backward (fixed seed: the mask does not depend on the input, so
// the op is linear and the central difference is exact up to round-off).
#pragma once
#include "blip2/nn/dropout.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_dropout_grads(std::vector<grad_case>& cases) {
  constexpr double p = 0.3;
  constexpr std::uint64_t seed = 2024;
  grad_case g;
  g.desc = describe("dropout", {{"R", 5}, {"C", 7}}, "p=0.3");
  g.init = [](io<double>& x) {
    rng r(57);
    x.make("inp", {5, 7}, r.normals());
    x.make("out", {5, 7}, [](index_t) { return 0.0; });
  };
  g.wrt = {"inp"};
  g.outputs = {"out"};
  g.forward = [](reference_backend& be, io<double>& x) {
    dropout_forward(be, x.out<2>("out"), x.in<2>("inp"), p, seed);
  };
  g.backward = [](reference_backend& be, io<double>& x) {
    dropout_backward(be, x.out<2>("dinp"), x.in<2>("dout"), p, seed);
  };
  cases.push_back(std::move(g));
}

}  // namespace blip2::testing
