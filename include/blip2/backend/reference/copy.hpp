// copy kernels of the reference backend: dst = src over rank-4 views of any strides, within the backend's
// memory (op::copy) and between it and the host (op::copy_to_host, op::copy_from_host: the reference
// backend's memory is the host's, so all three are the same loop).
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace reference_detail {

template <class T>
void copy4(tensor_view<T, 4> dst, tensor_view<const T, 4> src) {
  const index_t A = dst.extent(0), B = dst.extent(1), C = dst.extent(2), D = dst.extent(3);
  BLIP2_OMP_FOR_COLLAPSE2
  for (index_t a = 0; a < A; ++a)
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c)
        for (index_t d = 0; d < D; ++d) dst(a, b, c, d) = src(a, b, c, d);
}

}  // namespace reference_detail

template <>
struct kernel<reference_backend, op::copy> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 4> dst, tensor_view<const T, 4> src) {
    reference_detail::copy4(dst, src);
  }
};

template <>
struct kernel<reference_backend, op::copy_to_host> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 4, host_space> host_dst, tensor_view<const T, 4> src) {
    reference_detail::copy4(host_dst, src);
  }
};

template <>
struct kernel<reference_backend, op::copy_from_host> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 4> dst, tensor_view<const T, 4, host_space> host_src) {
    reference_detail::copy4(dst, host_src);
  }
};

}  // namespace blip2
