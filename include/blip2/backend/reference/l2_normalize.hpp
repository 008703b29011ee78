// blip2/backend/reference/l2_normalize.hpp: row L2 normalisation kernels of the reference backend.
// Dimensions: R rows, D features. Arguments are checked by the public op (blip2::l2_normalize_*).
#pragma once
#include <cmath>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::l2_normalize_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<T, 1> norm, tensor_view<const T, 2> inp,
                  T eps) {
    const index_t R = inp.extent(0), D = inp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      T ss = 0;
      for (index_t d = 0; d < D; ++d) ss += inp(r, d) * inp(r, d);
      const T n = std::sqrt(ss);
      const T denom = n >= eps ? n : eps;  // max(n, eps); a NaN norm stays NaN
      for (index_t d = 0; d < D; ++d) out(r, d) = inp(r, d) / denom;
      norm(r) = n;
    }
  }
};

template <>
struct kernel<reference_backend, op::l2_normalize_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> inp, tensor_view<const T, 1> norm, T eps, grad_write mode) {
    const index_t R = inp.extent(0), D = inp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      const T n = norm(r);
      const bool add = mode == grad_write::accumulate;
      if (n >= eps) {
        // forward: out = inp / n, n = ||inp||_2 (unclamped: like PyTorch's clamp_min, the gradient takes
        // this branch at n == eps too); dinp = dout / n - inp (inp . dout) / n^3
        T dot = 0;
        for (index_t d = 0; d < D; ++d) dot += inp(r, d) * dout(r, d);
        const T inv = T(1) / n;
        const T k = dot * inv * inv * inv;
        for (index_t d = 0; d < D; ++d) dinp(r, d) = (add ? dinp(r, d) : T(0)) + dout(r, d) * inv - inp(r, d) * k;
      } else {
        // forward: out = inp / eps (the norm was clamped, the denominator is a constant); dinp = dout / eps.
        // A row with a NaN norm lands here too and gets NaN.
        const T s = std::isnan(n) ? n : T(1) / eps;
        for (index_t d = 0; d < D; ++d) dinp(r, d) = (add ? dinp(r, d) : T(0)) + dout(r, d) * s;
      }
    }
  }
};

}  // namespace blip2
