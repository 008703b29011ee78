// Conformance cases for softmax_forward (with and without an additive mask) and softmax_backward.
#pragma once
#include <limits>

#include "blip2/nn/softmax.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_softmax_cases(std::vector<op_case>& cases) {
  enum class masking { none, full, broadcast_row, fully_masked_row };
  struct shape {
    index_t R, N;
    masking m;
  };
  for (auto [R, N, m] : {shape{1, 1, masking::none}, shape{7, 13, masking::none}, shape{13, 5, masking::none},
                         shape{7, 13, masking::full}, shape{5, 7, masking::broadcast_row},
                         shape{3, 5, masking::fully_masked_row}, shape{64, 257, masking::full}}) {
    auto init = [R = R, N = N, m = m](io<double>& x) {
      rng r(R * 100 + N + static_cast<int>(m));
      x.make("inp", {R, N}, r.normals(3.0));
      x.make("out", {R, N}, [](index_t) { return std::numeric_limits<double>::quiet_NaN(); });
      // additive masks as BLIP-2 makes them: 0 (keep) or -10000 (masked)
      if (m == masking::full)  // (R, N), about a third masked, every row keeps its first entry
        x.make("mask", {R, N}, [&](index_t i) { return i % N != 0 && r.uniform(0, 1) < 0.33 ? -10000.0 : 0.0; });
      if (m == masking::broadcast_row)  // one key-padding row (N) for all R rows: the last two keys padded
        x.make("mask", {N}, [&](index_t i) { return i >= N - 2 ? -10000.0 : 0.0; });
      if (m == masking::fully_masked_row)  // row 1 masked everywhere: finite, the weights of inp alone
        x.make("mask", {R, N}, [&](index_t i) { return i / N == 1 || i % N == 3 ? -10000.0 : 0.0; });
    };
    auto forward = [R = R, N = N, m = m](auto& be, auto& x) {
      auto out = x.template out<2>("out");
      auto inp = x.template in<2>("inp");
      if (m == masking::none)
        softmax_forward(be, out, inp);
      else if (m == masking::broadcast_row)
        softmax_forward(be, out, inp, detail::as_const(x.template at<2>("mask", {R, N}, {0, 1})));
      else
        softmax_forward(be, out, inp, x.template in<2>("mask"));
    };
    const char* what = m == masking::none            ? ""
                       : m == masking::full          ? "mask"
                       : m == masking::broadcast_row ? "mask_row_stride0"
                                                     : "fully_masked_row";
    // A fully masked row computes inp - 10000 in float32, rounded to the float spacing at 10^4 (2^-10):
    // its weights carry relative errors up to ~5e-4 (as in PyTorch); measured NMSE 5e-10, too close to the
    // default 1e-9 to be robust. 1e-6 still catches a perturbed element (NMSE > 1e-5 on this 3 x 5 case).
    const double tol = m == masking::fully_masked_row ? 1e-6 : 1e-9;
    cases.push_back(make_case("softmax_forward", describe("softmax_forward", {{"R", R}, {"N", N}}, what), init,
                              {"out"}, forward, tol));
  }
  for (auto [R, N] : {std::pair<index_t, index_t>{7, 13}, {13, 5}, {1, 1}}) {
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [R = R, N = N, mode](io<double>& x) {
        rng r(R * 10 + N);
        x.make("inp", {R, N}, r.normals(2.0));
        x.make("out", {R, N}, [](index_t) { return 0.0; });
        reference_backend rb;
        softmax_forward(rb, x.out<2>("out"), x.in<2>("inp"));  // a genuine softmax for backward
        x.make("dout", {R, N}, r.normals());
        x.make("dinp", {R, N}, [&](index_t) {
          return mode == grad_write::accumulate ? r.normal() : std::numeric_limits<double>::quiet_NaN();
        });
      };
      auto backward = [mode](auto& be, auto& x) {
        softmax_backward(be, x.template out<2>("dinp"), x.template in<2>("dout"), x.template in<2>("out"), mode);
      };
      cases.push_back(make_case("softmax_backward",
                                describe("softmax_backward", {{"R", R}, {"N", N}},
                                         mode == grad_write::accumulate ? "accumulate" : "assign"),
                                init, {"dinp"}, backward));
    }
  }
  // in place: dinp is dout's buffer (each row's sum must be taken before the row is overwritten)
  auto init = [](io<double>& x) {
    rng r(99);
    x.make("inp", {9, 21}, r.normals(2.0));
    x.make("out", {9, 21}, [](index_t) { return 0.0; });
    reference_backend rb;
    softmax_forward(rb, x.out<2>("out"), x.in<2>("inp"));
    x.make("grad", {9, 21}, r.normals());  // dout on entry, dinp on exit
  };
  auto in_place = [](auto& be, auto& x) {
    softmax_backward(be, x.template out<2>("grad"), x.template in<2>("grad"), x.template in<2>("out"));
  };
  cases.push_back(make_case("softmax_backward", describe("softmax_backward", {{"R", 9}, {"N", 21}}, "in_place"), init,
                            {"grad"}, in_place));
}

}  // namespace blip2::testing
