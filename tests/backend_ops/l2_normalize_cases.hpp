// Conformance cases for l2_normalize_forward / l2_normalize_backward.
#pragma once
#include <limits>

#include "blip2/nn/l2_normalize.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_l2_normalize_cases(std::vector<op_case>& cases) {
  // special: row 1 is zero, row 3 has a norm of about 1e-13 (ten times below eps = 1e-12, far from the
  // branch point in float too), row 5 holds a NaN; the other rows are ordinary.
  struct shape { index_t R, D; bool special; };
  for (const shape& s : {shape{1, 7, false}, shape{5, 13, false}, shape{13, 5, false}, shape{32, 256, false},
                         shape{7, 13, true}}) {
    const index_t R = s.R, D = s.D;
    const bool special = s.special;
    auto init_inputs = [=](io<double>& x) {
      rng r(R * 11 + D);
      x.make("inp", {R, D}, [&](index_t) { return r.normal(0.7); });
      if (special) {
        auto& v = x.fbuf("inp").data;
        for (index_t d = 0; d < D; ++d) {
          v[1 * D + d] = 0.0;
          v[3 * D + d] *= 3e-14;
        }
        v[5 * D + 2] = std::numeric_limits<double>::quiet_NaN();
      }
      x.make("out", {R, D}, r.normals());  // pre-filled: every element must be written
      x.make("norm", {R}, r.normals());
    };
    auto forward = [](auto& be, auto& x) {
      using T = typename std::remove_cvref_t<decltype(x)>::scalar;
      l2_normalize_forward(be, x.template out<2>("out"), x.template in<2>("inp"),
                           l2_normalize_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("norm")});
    };
    const std::string extra = special ? "zero_row,tiny_row,nan_row" : "";
    cases.push_back(make_case("l2_normalize_forward", describe("l2_normalize_forward", {{"R", R}, {"D", D}}, extra),
                              init_inputs, {"out", "norm"}, forward));
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [=](io<double>& x) {
        init_inputs(x);
        reference_backend rb;
        forward(rb, x);  // the cache backward needs
        rng r(R * 3 + D);
        x.make("dout", {R, D}, r.normals());
        x.make("dinp", {R, D}, r.normals());  // pre-filled in both modes: assign must overwrite it
      };
      auto backward = [mode](auto& be, auto& x) {
        using T = typename std::remove_cvref_t<decltype(x)>::scalar;
        l2_normalize_backward(be, x.template out<2>("dinp"), x.template in<2>("dout"), x.template in<2>("inp"),
                              l2_normalize_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("norm")}, 1e-12, mode);
      };
      const std::string m = mode == grad_write::accumulate ? "accumulate" : "assign";
      cases.push_back(make_case("l2_normalize_backward",
                                describe("l2_normalize_backward", {{"R", R}, {"D", D}},
                                         m + (special ? "," + extra : "")),
                                init, {"dinp"}, backward));
    }
  }
}

}  // namespace blip2::testing
