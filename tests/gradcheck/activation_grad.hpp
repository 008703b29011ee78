// Finite-difference checks for gelu_backward and relu_backward.
#pragma once
#include <string>

#include "blip2/nn/gelu.hpp"
#include "blip2/nn/relu.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_activation_grads(std::vector<grad_case>& cases) {
  for (const std::string act : {"gelu", "relu"}) {
    const bool gelu = act == "gelu";
    for (auto [R, C] : {std::pair<index_t, index_t>{1, 5}, {3, 7}}) {
      grad_case g;
      g.desc = describe(act, {{"R", R}, {"C", C}});
      g.init = [R = R, C = C](io<double>& x) {
        rng r(R * 3 + C);
        x.make("inp", {R, C}, r.normals(2.0));  // ReLU's kink at 0 is farther than h from every sample
        x.make("out", {R, C}, [](index_t) { return 0.0; });
      };
      g.wrt = {"inp"};
      g.outputs = {"out"};
      g.forward = [gelu](reference_backend& be, io<double>& x) {
        if (gelu)
          gelu_forward(be, x.out<2>("out"), x.in<2>("inp"));
        else
          relu_forward(be, x.out<2>("out"), x.in<2>("inp"));
      };
      g.backward = [gelu](reference_backend& be, io<double>& x) {
        if (gelu)
          gelu_backward(be, x.out<2>("dinp"), x.in<2>("dout"), x.in<2>("inp"));
        else
          relu_backward(be, x.out<2>("dinp"), x.in<2>("dout"), x.in<2>("inp"));
      };
      cases.push_back(std::move(g));
    }
  }
}

}  // namespace blip2::testing
