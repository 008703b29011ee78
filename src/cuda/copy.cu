// src/cuda/copy.cu: strided copies and fills on the device, and the copies to and from the host.
// One thread per element of the rank-4 index space; the element is moved as an integer of its size.
#include <cstring>

#include "blip2/backend/cuda/copy.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

template <class W>
__global__ void copy4_kernel(W* dst, const W* src, raw_view4 d, raw_view4 s, index_t n) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t c3 = i % d.e[3], c2 = (i / d.e[3]) % d.e[2], c1 = (i / (d.e[3] * d.e[2])) % d.e[1],
                  c0 = i / (d.e[3] * d.e[2] * d.e[1]);
    dst[c0 * d.s[0] + c1 * d.s[1] + c2 * d.s[2] + c3 * d.s[3]] = src[c0 * s.s[0] + c1 * s.s[1] + c2 * s.s[2] + c3 * s.s[3]];
  }
}

template <class W>
__global__ void fill4_kernel(W* dst, raw_view4 d, W value, index_t n) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t c3 = i % d.e[3], c2 = (i / d.e[3]) % d.e[2], c1 = (i / (d.e[3] * d.e[2])) % d.e[1],
                  c0 = i / (d.e[3] * d.e[2] * d.e[1]);
    dst[c0 * d.s[0] + c1 * d.s[1] + c2 * d.s[2] + c3 * d.s[3]] = value;
  }
}

index_t count(const raw_view4& v) { return v.e[0] * v.e[1] * v.e[2] * v.e[3]; }

// Whether the view is dense row-major (its elements are one contiguous run).
bool dense(const raw_view4& v) {
  index_t expect = 1;
  for (int i = 3; i >= 0; --i) {
    if (v.e[i] != 1 && v.s[i] != expect) return false;
    expect *= v.e[i];
  }
  return true;
}

raw_view4 dense_like(const raw_view4& v, void* p) {
  raw_view4 d = v;
  d.p = p;
  d.s[3] = 1;
  d.s[2] = v.e[3];
  d.s[1] = v.e[3] * v.e[2];
  d.s[0] = v.e[3] * v.e[2] * v.e[1];
  return d;
}

template <class W>
void launch_copy(cuda_backend& be, raw_view4 dst, raw_view4 src, index_t n) {
  copy4_kernel<W><<<grid_for(n), 256, 0, stream_of(be)>>>(
      static_cast<W*>(dst.p), static_cast<const W*>(src.p), dst, src, n);
  check_launch("copy");
}

// The same strided loop on the host (the host side of a strided copy to or from the device).
void host_copy4(raw_view4 dst, raw_view4 src) {
  const std::size_t el = dst.elem;
  for (index_t a = 0; a < dst.e[0]; ++a)
    for (index_t b = 0; b < dst.e[1]; ++b)
      for (index_t c = 0; c < dst.e[2]; ++c)
        for (index_t d = 0; d < dst.e[3]; ++d)
          std::memcpy(static_cast<char*>(dst.p) + (a * dst.s[0] + b * dst.s[1] + c * dst.s[2] + d * dst.s[3]) * el,
                      static_cast<const char*>(src.p) + (a * src.s[0] + b * src.s[1] + c * src.s[2] + d * src.s[3]) * el,
                      el);
}

}  // namespace

void copy_device(cuda_backend& be, raw_view4 dst, raw_view4 src) {
  const index_t n = count(dst);
  if (n == 0) return;
  if (dense(dst) && dense(src)) {
    check(cudaMemcpyAsync(dst.p, src.p, n * dst.elem, cudaMemcpyDeviceToDevice, stream_of(be)), "copy");
    return;
  }
  switch (dst.elem) {
    case 1: launch_copy<unsigned char>(be, dst, src, n); break;
    case 2: launch_copy<unsigned short>(be, dst, src, n); break;
    case 4: launch_copy<unsigned int>(be, dst, src, n); break;
    case 8: launch_copy<unsigned long long>(be, dst, src, n); break;
    default: throw backend_error("cuda: copy of " + std::to_string(dst.elem) + "-byte elements is not supported");
  }
}

void fill_device(cuda_backend& be, raw_view4 dst, const void* value) {
  const index_t n = count(dst);
  if (n == 0) return;
  const unsigned blocks = grid_for(n);
  auto launch = [&](auto w) {
    using W = decltype(w);
    std::memcpy(&w, value, sizeof(W));
    fill4_kernel<W><<<blocks, 256, 0, stream_of(be)>>>(static_cast<W*>(dst.p), dst, w, n);
  };
  switch (dst.elem) {
    case 1: launch((unsigned char)0); break;
    case 2: launch((unsigned short)0); break;
    case 4: launch((unsigned int)0); break;
    case 8: launch((unsigned long long)0); break;
    default: throw backend_error("cuda: fill of " + std::to_string(dst.elem) + "-byte elements is not supported");
  }
  check_launch("fill");
}

void copy_to_host(cuda_backend& be, raw_view4 host_dst, raw_view4 src) {
  const index_t n = count(src);
  if (n == 0) return;
  const std::size_t bytes = n * src.elem;
  // gather the device view densely (a no-op copy when it is dense), bring it over, scatter on the host
  const void* dense_src = src.p;
  if (!dense(src)) {
    void* tmp = be.scratch(-1, bytes);
    copy_device(be, dense_like(src, tmp), src);
    dense_src = tmp;
  }
  if (dense(host_dst)) {
    check(cudaMemcpyAsync(host_dst.p, dense_src, bytes, cudaMemcpyDeviceToHost, stream_of(be)), "copy to host");
    be.synchronize();
    return;
  }
  void* staging = be.host_staging(0, bytes);
  check(cudaMemcpyAsync(staging, dense_src, bytes, cudaMemcpyDeviceToHost, stream_of(be)), "copy to host");
  be.synchronize();
  host_copy4(host_dst, dense_like(host_dst, staging));
}

void copy_from_host(cuda_backend& be, raw_view4 dst, raw_view4 host_src) {
  const index_t n = count(dst);
  if (n == 0) return;
  const std::size_t bytes = n * dst.elem;
  // the host source goes through staging: the asynchronous copy then reads memory the caller cannot
  // change; the staging buffer is reused only after the stream has drained it
  be.synchronize();
  void* staging = be.host_staging(1, bytes);
  host_copy4(dense_like(host_src, staging), host_src);
  if (dense(dst)) {
    check(cudaMemcpyAsync(dst.p, staging, bytes, cudaMemcpyHostToDevice, stream_of(be)), "copy from host");
    return;
  }
  void* tmp = be.scratch(-2, bytes);
  check(cudaMemcpyAsync(tmp, staging, bytes, cudaMemcpyHostToDevice, stream_of(be)), "copy from host");
  copy_device(be, dst, dense_like(dst, tmp));
}

}  // namespace blip2::cuda_detail
