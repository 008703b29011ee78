// blip2/backend/cuda/copy.hpp: copy and fill on the device, and the copies between device and host, for
// any trivially copyable element (float, index_t, bfloat16, bytes) over rank-4 views of any strides.
// A copy to the host waits for the stream (the host reads the result next); a copy from the host does not
// wait for the kernels that read it: the host source is first copied into a staging buffer owned by the
// backend, so the caller may reuse its memory at once.
#pragma once
#include <cstring>
#include <type_traits>

#include "blip2/backend/cuda/cuda_backend.hpp"

namespace blip2 {
namespace cuda_detail {

// One rank-4 strided view as bytes: its base, element size, extents and strides (in elements).
struct raw_view4 {
  void* p;
  std::size_t elem;
  index_t e[4], s[4];
};
template <class T>
raw_view4 raw_of(const tensor_view<T, 4, cuda_space>& v) {
  return {const_cast<std::remove_const_t<T>*>(v.data()), sizeof(T), {v.extent(0), v.extent(1), v.extent(2), v.extent(3)},
          {v.stride(0), v.stride(1), v.stride(2), v.stride(3)}};
}
template <class T>
raw_view4 raw_of(const tensor_view<T, 4, host_space>& v) {
  return {const_cast<std::remove_const_t<T>*>(v.data()), sizeof(T), {v.extent(0), v.extent(1), v.extent(2), v.extent(3)},
          {v.stride(0), v.stride(1), v.stride(2), v.stride(3)}};
}

void copy_device(cuda_backend& be, raw_view4 dst, raw_view4 src);     // src/cuda/copy.cu
void fill_device(cuda_backend& be, raw_view4 dst, const void* value);  // value: one element
void copy_to_host(cuda_backend& be, raw_view4 host_dst, raw_view4 src);
void copy_from_host(cuda_backend& be, raw_view4 dst, raw_view4 host_src);

}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::copy> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 4, cuda_space> dst, tensor_view<const T, 4, cuda_space> src) {
    static_assert(std::is_trivially_copyable_v<T>);
    cuda_detail::copy_device(be, cuda_detail::raw_of(dst), cuda_detail::raw_of(src));
  }
};

template <>
struct kernel<cuda_backend, op::fill> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 4, cuda_space> dst, T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    cuda_detail::fill_device(be, cuda_detail::raw_of(dst), &value);
  }
};

template <>
struct kernel<cuda_backend, op::copy_to_host> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 4, host_space> host_dst, tensor_view<const T, 4, cuda_space> src) {
    cuda_detail::copy_to_host(be, cuda_detail::raw_of(host_dst), cuda_detail::raw_of(src));
  }
};

template <>
struct kernel<cuda_backend, op::copy_from_host> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 4, cuda_space> dst, tensor_view<const T, 4, host_space> host_src) {
    cuda_detail::copy_from_host(be, cuda_detail::raw_of(dst), cuda_detail::raw_of(host_src));
  }
};

}  // namespace blip2
