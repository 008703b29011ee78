// Finite-difference checks for gelu_backward.
#pragma once
#include "blip2/nn/gelu.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_gelu_grads(std::vector<grad_case>& cases) {
  for (auto [R, C] : {std::pair<index_t, index_t>{1, 5}, {3, 7}}) {
    grad_case g;
    g.desc = describe("gelu", {{"R", R}, {"C", C}});
    g.init = [R = R, C = C](io<double>& x) {
      rng r(R * 3 + C);
      x.make("inp", {R, C}, r.normals(2.0));
      x.make("out", {R, C}, [](index_t) { return 0.0; });
    };
    g.wrt = {"inp"};
    g.outputs = {"out"};
    g.forward = [](reference_backend& be, io<double>& x) { gelu_forward(be, x.out<2>("out"), x.in<2>("inp")); };
    g.backward = [](reference_backend& be, io<double>& x) {
      gelu_backward(be, x.out<2>("dinp"), x.in<2>("dout"), x.in<2>("inp"));
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing
