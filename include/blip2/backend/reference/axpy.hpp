// axpy and copy kernels of the reference backend. Dimensions: R rows, C columns.
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::axpy> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> y, tensor_view<const T, 2> x, T alpha) {
    const index_t R = y.extent(0), C = y.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) y(r, c) += alpha * x(r, c);
  }
};

}  // namespace blip2
