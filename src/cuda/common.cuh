// src/cuda/common.cuh: what every kernel file of the CUDA part shares: device-side views made from the
// library's tensor_views, the launch-and-check helpers, and the block-wide reductions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2::cuda_detail {

// A CUDA runtime call's failure as backend_error naming what was being done.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw backend_error(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}
// After a kernel launch: a bad configuration shows here (an error inside the kernel shows at the next
// synchronisation).
inline void check_launch(const char* kernel_name) { check(cudaGetLastError(), kernel_name); }

inline cudaStream_t stream_of(cuda_backend& be) { return static_cast<cudaStream_t>(be.stream()); }

// Blocks of `threads` covering n items (at least one block, so a launch with n == 0 is never made:
// callers return early on empty work).
inline unsigned blocks_for(index_t n, unsigned threads) {
  const index_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 2147483647 ? 2147483647 : b));
}

// Blocks for a grid-stride loop over n items (or n rows, `threads` items per block): at least one, at
// most 65535 (the loop covers the rest).
inline unsigned grid_for(index_t n, index_t threads = 256) {
  const index_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

// A tensor_view's pointer, extents and strides, passed to a kernel by value.
template <class T, int R>
struct dview {
  T* p;
  index_t e[R];
  index_t s[R];
  __host__ __device__ T& operator()(index_t i) const
    requires(R == 1)
  {
    return p[i * s[0]];
  }
  __host__ __device__ T& operator()(index_t i, index_t j) const
    requires(R == 2)
  {
    return p[i * s[0] + j * s[1]];
  }
  __host__ __device__ T& operator()(index_t i, index_t j, index_t k) const
    requires(R == 3)
  {
    return p[i * s[0] + j * s[1] + k * s[2]];
  }
  __host__ __device__ T& operator()(index_t i, index_t j, index_t k, index_t l) const
    requires(R == 4)
  {
    return p[i * s[0] + j * s[1] + k * s[2] + l * s[3]];
  }
};

template <class T, std::size_t R, class Space>
dview<T, static_cast<int>(R)> dv(const tensor_view<T, R, Space>& v) {
  dview<T, static_cast<int>(R)> d{};
  d.p = v.data();
  for (std::size_t i = 0; i < R; ++i) {
    d.e[i] = v.extent(i);
    d.s[i] = v.stride(i);
  }
  return d;
}

// Sum and max over a block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 floats.
__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ inline float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ inline float block_sum(float x, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  x = warp_sum(x);
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < warps ? shared[lane] : 0.0f;
  return warp_sum(x);
}
__device__ inline float block_max(float x, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  x = warp_max(x);
  __syncthreads();
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(x);
}

}  // namespace blip2::cuda_detail
