// Conformance cases for layer_norm_forward / layer_norm_backward.
#pragma once
#include <limits>

#include "blip2/nn/layer_norm.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_layer_norm_cases(std::vector<op_case>& cases) {
  struct shape { index_t R, C; bool nan_row; };
  for (auto [R, C, nan_row] : {shape{1, 1, false}, shape{5, 7, false}, shape{7, 13, false}, shape{13, 5, false},
                               shape{1, 13, false}, shape{64, 768, false}, shape{7, 13, true}}) {
    auto init_inputs = [R = R, C = C, nan_row = nan_row](io<double>& x) {
      rng r(R * 100 + C);
      x.make("inp", {R, C}, [&](index_t) { return r.normal(2.0) + 0.5; });
      if (nan_row) x.fbuf("inp").data[C * (R / 2) + 1] = std::numeric_limits<double>::quiet_NaN();
      x.make("weight", {C}, [&](index_t) { return r.normal(); });
      x.make("bias", {C}, [&](index_t) { return r.normal(); });
      x.make("out", {R, C}, [](index_t) { return 0.0; });
      x.make("mean", {R}, [](index_t) { return 0.0; });
      x.make("rstd", {R}, [](index_t) { return 0.0; });
    };
    auto forward = [](auto& be, auto& x) {
      using T = typename std::remove_cvref_t<decltype(x)>::scalar;
      layer_norm_forward(be, x.template out<2>("out"),
                         layer_norm_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("mean"), x.template out<1>("rstd")},
                         x.template in<2>("inp"), x.template in<1>("weight"), x.template in<1>("bias"), 1e-5);
    };
    const std::string nan = nan_row ? "nan_row" : "";
    cases.push_back(make_case("layer_norm_forward", describe("layer_norm_forward", {{"R", R}, {"C", C}}, nan),
                              init_inputs, {"out", "mean", "rstd"}, forward));
    // which parameter gradients are asked for: both; frozen (neither: every shape, both modes); one of the
    // two (two shapes, assign)
    enum class wanted { both, frozen, no_dweight, no_dbias };
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      for (wanted w : {wanted::both, wanted::frozen, wanted::no_dweight, wanted::no_dbias}) {
        const bool alone = w == wanted::no_dweight || w == wanted::no_dbias;
        if (alone && (mode != grad_write::assign || nan_row || !((R == 7 && C == 13) || (R == 64 && C == 768))))
          continue;
        const bool skip_dweight = w == wanted::frozen || w == wanted::no_dweight,
                   skip_dbias = w == wanted::frozen || w == wanted::no_dbias;
        auto init = [=](io<double>& x) {
          init_inputs(x);
          reference_backend rb;
          forward(rb, x);  // the cache backward needs
          rng r(R * 7 + C);
          x.make("dout", {R, C}, r.normals());
          x.make("dinp", {R, C}, [&](index_t) { return mode == grad_write::accumulate ? r.normal() : 0.0; });
          x.make("dweight", {C}, r.normals());  // pre-filled: parameter gradients accumulate
          x.make("dbias", {C}, r.normals());
        };
        auto backward = [mode, skip_dweight, skip_dbias](auto& be, auto& x) {
          using T = typename std::remove_cvref_t<decltype(x)>::scalar;
          auto dweight = skip_dweight ? decltype(x.template out<1>("dweight")){} : x.template out<1>("dweight");
          auto dbias = skip_dbias ? decltype(x.template out<1>("dbias")){} : x.template out<1>("dbias");
          layer_norm_backward(be, x.template out<2>("dinp"), dweight, dbias, x.template in<2>("dout"),
                              x.template in<2>("inp"), x.template in<1>("weight"),
                              layer_norm_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("mean"), x.template out<1>("rstd")}, mode);
        };
        const std::string extra = std::string(mode == grad_write::accumulate ? "accumulate" : "assign") +
                                  (nan_row ? ",nan_row" : "") + (w == wanted::frozen ? ",frozen" : "") +
                                  (w == wanted::no_dweight ? ",no_dweight" : "") +
                                  (w == wanted::no_dbias ? ",no_dbias" : "");
        // the gradients not asked for are compared too: they must keep their pre-filled values
        cases.push_back(make_case("layer_norm_backward",
                                  describe("layer_norm_backward", {{"R", R}, {"C", C}}, extra), init,
                                  {"dinp", "dweight", "dbias"}, backward));
      }
    }
  }
}

}  // namespace blip2::testing
