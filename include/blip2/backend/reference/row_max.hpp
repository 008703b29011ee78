// blip2/backend/reference/row_max.hpp: row max / argmax kernels of the reference backend.
// Dimensions: R rows, N columns (N >= 1). Arguments are checked by the public op (blip2::row_max_*).
#pragma once
#include <cmath>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::row_max_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 1> max, tensor_view<index_t, 1> argmax,
                  tensor_view<const T, 2> inp) {
    const index_t R = inp.extent(0), N = inp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      // like torch.max(dim): ties keep the first index; the first NaN wins and stops the search
      T m = inp(r, 0);
      index_t a = 0;
      if (!std::isnan(m)) {
        for (index_t c = 1; c < N; ++c) {
          const T x = inp(r, c);
          if (std::isnan(x)) {
            m = x;
            a = c;
            break;
          }
          if (x > m) {
            m = x;
            a = c;
          }
        }
      }
      max(r) = m;
      argmax(r) = a;
    }
  }
};

template <>
struct kernel<reference_backend, op::row_max_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 1> dmax,
                  tensor_view<const index_t, 1> argmax, grad_write mode) {
    const index_t R = dinp.extent(0), N = dinp.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      // forward: max[r] = inp[r, argmax[r]]; dinp[r, argmax[r]] gets dmax[r], the rest of the row nothing
      if (mode == grad_write::assign)
        for (index_t c = 0; c < N; ++c) dinp(r, c) = T(0);
      dinp(r, argmax(r)) += dmax(r);
    }
  }
};

}  // namespace blip2
