// Conformance cases for axpy and copy.
#pragma once
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_elementwise_cases(std::vector<op_case>& cases) {
  for (auto [R, C] : {std::pair<index_t, index_t>{1, 1}, {5, 7}, {13, 5}}) {
    auto init = [R = R, C = C](io<double>& x) {
      rng r(R * 31 + C);
      x.make("x", {R, C}, r.normals());
      x.make("y", {R, C}, r.normals());  // read and written
    };
    cases.push_back(make_case("axpy", describe("axpy", {{"R", R}, {"C", C}}, "alpha=-0.5"), init, {"y"},
                              [](auto& be, auto& x) { axpy(be, x.template out<2>("y"), x.template in<2>("x"), -0.5); }));
  }
  // (B, T, C) -> (T, B, C) and back: the layout change of the Q-Former's sequence-major activations
  for (auto [B, T, C] : {std::tuple<index_t, index_t, index_t>{1, 1, 3}, {3, 5, 7}}) {
    auto init = [B = B, T = T, C = C](io<double>& x) {
      rng r(B * 7 + T);
      x.make("src", {B, T, C}, r.normals());
      x.make("dst", {T, B, C}, [](index_t) { return 0.0; });
    };
    cases.push_back(make_case("copy", describe("copy", {{"B", B}, {"T", T}, {"C", C}}, "transpose01"), init, {"dst"},
                              [](auto& be, auto& x) {
                                auto d = x.template out<3>("dst");  // (T, B, C) seen as (B, T, C)
                                copy(be, transpose(d, 0, 1), x.template in<3>("src"));
                              }));
  }
}

}  // namespace blip2::testing
