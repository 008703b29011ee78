// blip2/backend/reference/layer_norm.hpp: LayerNorm kernels of the reference backend.
// Dimensions: R rows, C channels. Arguments are checked by the public op (blip2::layer_norm_*).
#pragma once
#include <cmath>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::layer_norm_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<T, 1> mean, tensor_view<T, 1> rstd,
                  tensor_view<const T, 2> inp, tensor_view<const T, 1> weight, tensor_view<const T, 1> bias,
                  T eps) {
    const index_t R = inp.extent(0), C = inp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      T m = 0;
      for (index_t c = 0; c < C; ++c) m += inp(r, c);
      m /= static_cast<T>(C);
      T v = 0;  // two passes: the variance never goes negative
      for (index_t c = 0; c < C; ++c) v += (inp(r, c) - m) * (inp(r, c) - m);
      v /= static_cast<T>(C);
      const T s = T(1) / std::sqrt(v + eps);
      for (index_t c = 0; c < C; ++c) out(r, c) = (inp(r, c) - m) * s * weight(c) + bias(c);
      mean(r) = m;
      rstd(r) = s;
    }
  }
};

template <>
struct kernel<reference_backend, op::layer_norm_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<T, 1> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 1> weight,
                  tensor_view<const T, 1> mean, tensor_view<const T, 1> rstd, grad_write mode) {
    const index_t R = inp.extent(0), C = inp.extent(1);
    // dinp: rows are independent.
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      // norm = (inp - mean) * rstd; dnorm = dout * weight
      T mean_dnorm = 0, mean_dnorm_norm = 0;
      for (index_t c = 0; c < C; ++c) {
        const T norm = (inp(r, c) - mean(r)) * rstd(r);
        const T dnorm = dout(r, c) * weight(c);
        mean_dnorm += dnorm;
        mean_dnorm_norm += dnorm * norm;
      }
      mean_dnorm /= static_cast<T>(C);
      mean_dnorm_norm /= static_cast<T>(C);
      for (index_t c = 0; c < C; ++c) {
        const T norm = (inp(r, c) - mean(r)) * rstd(r);
        const T g = (dout(r, c) * weight(c) - mean_dnorm - norm * mean_dnorm_norm) * rstd(r);
        dinp(r, c) = (mode == grad_write::accumulate ? dinp(r, c) : T(0)) + g;
      }
    }
    // dweight, dbias: columns are independent (no races, no atomics). A frozen layer passes neither
    // (empty views) and skips this entirely; either may be given alone.
    if (!dweight.data() && !dbias.data()) return;
    BLIP2_OMP_FOR
    for (index_t c = 0; c < C; ++c) {
      if (dweight.data()) {
        T dw = 0;
        for (index_t r = 0; r < R; ++r) dw += dout(r, c) * (inp(r, c) - mean(r)) * rstd(r);
        dweight(c) += dw;
      }
      if (dbias.data()) {
        T db = 0;
        for (index_t r = 0; r < R; ++r) db += dout(r, c);
        dbias(c) += db;
      }
    }
  }
};

}  // namespace blip2
