// blip2/backend/reference/softmax.hpp: softmax kernels of the reference backend.
// Dimensions: R rows, N entries per row. Arguments are checked by the public op (blip2::softmax_*); an
// empty mask view (data() == nullptr) means no mask. out may be inp (in place), dinp may be dout.
#pragma once
#include <cmath>
#include <limits>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::softmax_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const T, 2> mask) {
    const index_t R = inp.extent(0), N = inp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      auto x = [&](index_t n) { return mask.data() ? inp(r, n) + mask(r, n) : inp(r, n); };
      T mx = -std::numeric_limits<T>::infinity();
      for (index_t n = 0; n < N; ++n) mx = x(n) > mx ? x(n) : mx;
      T sum = 0;
      for (index_t n = 0; n < N; ++n) {
        const T e = std::exp(x(n) - mx);  // <= 1: no overflow
        out(r, n) = e;
        sum += e;
      }
      const T inv = T(1) / sum;
      for (index_t n = 0; n < N; ++n) out(r, n) *= inv;
    }
  }
};

template <>
struct kernel<reference_backend, op::softmax_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> out, grad_write mode) {
    const index_t R = out.extent(0), N = out.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      // forward: out(r, n) = exp(x(r, n) - max) / sum_j exp(x(r, j) - max)
      // dx(r, n) = out(r, n) (dout(r, n) - sum_j dout(r, j) out(r, j))
      T dot = 0;
      for (index_t n = 0; n < N; ++n) dot += dout(r, n) * out(r, n);
      for (index_t n = 0; n < N; ++n) {
        const T g = out(r, n) * (dout(r, n) - dot);
        dinp(r, n) = (mode == grad_write::accumulate ? dinp(r, n) : T(0)) + g;
      }
    }
  }
};

}  // namespace blip2
