// Finite-difference checks for softmax_backward, without a mask and with additive masks (a masked
// entry, a broadcast padding row, a fully masked row).
#pragma once
#include "blip2/nn/softmax.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_softmax_grads(std::vector<grad_case>& cases) {
  enum class masking { none, full, broadcast_row };
  struct shape {
    index_t R, N;
    masking m;
  };
  for (auto [R, N, m] : {shape{1, 5, masking::none}, shape{3, 7, masking::none}, shape{4, 6, masking::full},
                         shape{3, 5, masking::broadcast_row}}) {
    grad_case g;
    g.desc = describe("softmax", {{"R", R}, {"N", N}},
                      m == masking::none ? "" : m == masking::full ? "mask,fully_masked_row" : "mask_row_stride0");
    g.init = [R = R, N = N, m = m](io<double>& x) {
      rng r(R * 10 + N);
      x.make("inp", {R, N}, r.normals(1.5));
      x.make("out", {R, N}, [](index_t) { return 0.0; });
      if (m == masking::full)  // row 2 fully masked, entry (r, 1) masked elsewhere
        x.make("mask", {R, N}, [=](index_t i) { return i / N == 2 || i % N == 1 ? -10000.0 : 0.0; });
      if (m == masking::broadcast_row)
        x.make("mask", {N}, [=](index_t i) { return i == N - 1 ? -10000.0 : 0.0; });
    };
    g.wrt = {"inp"};
    g.outputs = {"out"};
    g.forward = [R = R, N = N, m = m](reference_backend& be, io<double>& x) {
      if (m == masking::none)
        softmax_forward(be, x.out<2>("out"), x.in<2>("inp"));
      else if (m == masking::full)
        softmax_forward(be, x.out<2>("out"), x.in<2>("inp"), x.in<2>("mask"));
      else
        softmax_forward(be, x.out<2>("out"), x.in<2>("inp"),
                        tensor_view<const double, 2>(x.fbuf("mask").data.data(), {R, N}, {0, 1}));
    };
    g.backward = [](reference_backend& be, io<double>& x) {
      softmax_backward(be, x.out<2>("dinp"), x.in<2>("dout"), x.in<2>("out"));
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing
