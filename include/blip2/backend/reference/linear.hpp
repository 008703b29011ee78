// blip2/backend/reference/linear.hpp: linear kernels of the reference backend.
// Dimensions: R rows, K input features, N output features. Arguments are checked by the public op
// (blip2::linear_*); an empty view (data() == nullptr) for bias, dinp, dweight or dbias means "none".
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::linear_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const T, 2> weight, tensor_view<const T, 1> bias) {
    const index_t R = inp.extent(0), K = inp.extent(1), N = weight.extent(0);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      for (index_t n = 0; n < N; ++n) {
        T acc = bias.data() ? bias(n) : T(0);
        for (index_t k = 0; k < K; ++k) acc += inp(r, k) * weight(n, k);
        out(r, n) = acc;
      }
    }
  }
};

template <>
struct kernel<reference_backend, op::linear_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<T, 2> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 2> weight,
                  grad_write mode) {
    const index_t R = inp.extent(0), K = inp.extent(1), N = weight.extent(0);
    // forward: out(r, n) = bias(n) + sum_k inp(r, k) weight(n, k)
    // dinp(r, k) = sum_n dout(r, n) weight(n, k): rows are independent
    if (dinp.data()) {
      BLIP2_OMP_FOR
      for (index_t r = 0; r < R; ++r) {
        for (index_t k = 0; k < K; ++k) {
          T acc = 0;
          for (index_t n = 0; n < N; ++n) acc += dout(r, n) * weight(n, k);
          dinp(r, k) = (mode == grad_write::accumulate ? dinp(r, k) : T(0)) + acc;
        }
      }
    }
    // dweight(n, k) += sum_r dout(r, n) inp(r, k); dbias(n) += sum_r dout(r, n): output features are
    // independent (no races, no atomics). A frozen layer passes neither and skips this entirely.
    if (!dweight.data() && !dbias.data()) return;
    BLIP2_OMP_FOR
    for (index_t n = 0; n < N; ++n) {
      if (dweight.data()) {
        for (index_t k = 0; k < K; ++k) {
          T acc = 0;
          for (index_t r = 0; r < R; ++r) acc += dout(r, n) * inp(r, k);
          dweight(n, k) += acc;
        }
      }
      if (dbias.data()) {
        T acc = 0;
        for (index_t r = 0; r < R; ++r) acc += dout(r, n);
        dbias(n) += acc;
      }
    }
  }
};

}  // namespace blip2
