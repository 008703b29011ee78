// fill kernel of the reference backend: dst = value over a rank-4 view of any strides.
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::fill> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 4> dst, T value) {
    const index_t A = dst.extent(0), B = dst.extent(1), C = dst.extent(2), D = dst.extent(3);
    BLIP2_OMP_FOR_COLLAPSE2
    for (index_t a = 0; a < A; ++a)
      for (index_t b = 0; b < B; ++b)
        for (index_t c = 0; c < C; ++c)
          for (index_t d = 0; d < D; ++d) dst(a, b, c, d) = value;
  }
};

}  // namespace blip2
