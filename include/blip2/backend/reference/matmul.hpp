// blip2/backend/reference/matmul.hpp: the batched strided matmul of the reference backend.
// Dimensions: batch, M, K, N. Arguments are checked (and broadcasts made explicit as zero strides) by the
// public op (blip2::matmul).
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::matmul> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 3> c, tensor_view<const T, 3> a, tensor_view<const T, 3> b,
                  T alpha, T beta) {
    const index_t batch = c.extent(0), M = c.extent(1), N = c.extent(2), K = a.extent(2);
    // every (batch, row) of C is written by one thread
    BLIP2_OMP_FOR_COLLAPSE2
    for (index_t p = 0; p < batch; ++p) {
      for (index_t m = 0; m < M; ++m) {
        for (index_t n = 0; n < N; ++n) {
          T acc = 0;
          for (index_t k = 0; k < K; ++k) acc += a(p, m, k) * b(p, k, n);
          // beta == 0 never reads C, so whatever C held (NaN included) is gone
          c(p, m, n) = alpha * acc + (beta == T(0) ? T(0) : beta * c(p, m, n));
        }
      }
    }
  }
};

}  // namespace blip2
