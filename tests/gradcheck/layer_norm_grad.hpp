// Finite-difference checks for layer_norm_backward, full and frozen (dinp alone, empty dweight and dbias).
#pragma once
#include "blip2/nn/layer_norm.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_layer_norm_grads(std::vector<grad_case>& cases) {
  for (auto [R, C] : {std::pair<index_t, index_t>{1, 5}, {3, 7}, {5, 13}})
    for (bool frozen : {false, true}) {
      grad_case g;
      g.desc = describe("layer_norm", {{"R", R}, {"C", C}}, frozen ? "frozen" : "");
      g.init = [R = R, C = C](io<double>& x) {
        rng r(R + 10 * C);
        x.make("inp", {R, C}, r.normals(1.5));
        x.make("weight", {C}, r.normals());
        x.make("bias", {C}, r.normals());
        x.make("out", {R, C}, [](index_t) { return 0.0; });
        x.make("mean", {R}, [](index_t) { return 0.0; });
        x.make("rstd", {R}, [](index_t) { return 0.0; });
      };
      g.wrt = frozen ? std::vector<std::string>{"inp"} : std::vector<std::string>{"inp", "weight", "bias"};
      g.outputs = {"out"};
      g.forward = [](reference_backend& be, io<double>& x) {
        layer_norm_forward(be, x.out<2>("out"), layer_norm_cache<double>{x.out<1>("mean"), x.out<1>("rstd")},
                           x.in<2>("inp"), x.in<1>("weight"), x.in<1>("bias"), 1e-5);
      };
      g.backward = [frozen](reference_backend& be, io<double>& x) {
        // frozen: empty parameter-gradient views, only dinp
        auto dweight = frozen ? tensor_view<double, 1>{} : x.out<1>("dweight");
        auto dbias = frozen ? tensor_view<double, 1>{} : x.out<1>("dbias");
        layer_norm_backward(be, x.out<2>("dinp"), dweight, dbias, x.in<2>("dout"), x.in<2>("inp"),
                            x.in<1>("weight"), layer_norm_cache<double>{x.out<1>("mean"), x.out<1>("rstd")});
      };
      cases.push_back(std::move(g));
    }
}

}  // namespace blip2::testing
