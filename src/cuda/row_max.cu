// src/cuda/row_max.cu: row max / argmax, forward and backward.
//   forward:  one warp per row (grid-stride over the rows, 8 rows to a block of 256): each lane scans the
//             columns lane, lane + 32, ... keeping its best (value, index), then a butterfly of shuffles
//             merges the 32 candidates. "Best" is the order the reference's scan finds: a NaN beats any
//             number (between NaNs the smaller index wins: the first NaN), else the larger value, and
//             between equal values (-0 == +0 included) the smaller index (the first maximum). The order is
//             a total one on (value, index) pairs with distinct indices, so the merge order does not
//             matter; max gets the chosen element itself (a NaN keeps its payload).
//   backward: assign: one thread per element of dinp (grid-stride over R N): dinp(r, c) = 0 + dmax(r) at
//             c == argmax(r), else 0; accumulate: one thread per row, dinp(r, argmax(r)) += dmax(r).
//             An argmax outside [0, N) (the public op checks it on the host only) adds nothing anywhere.
#include <cmath>

#include "blip2/backend/cuda/row_max.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

// Whether (v at index i) beats (w at index j), i != j.
__device__ inline bool beats(float v, index_t i, float w, index_t j) {
  const bool vn = isnan(v), wn = isnan(w);
  if (vn || wn) return vn && (!wn || i < j);
  if (v != w) return v > w;
  return i < j;
}

constexpr unsigned threads = 256, rows_per_block = threads / 32;

__global__ void row_max_forward_kernel(dview<float, 1> max, dview<index_t, 1> argmax, dview<const float, 2> inp) {
  const index_t R = inp.e[0], N = inp.e[1];
  const unsigned lane = threadIdx.x % 32;
  const index_t step = index_t(gridDim.x) * (blockDim.x / 32);
  // r is the same for the 32 lanes of a warp, so every lane takes part in every shuffle
  for (index_t r = blockIdx.x * index_t(blockDim.x / 32) + threadIdx.x / 32; r < R; r += step) {
    float m = 0.0f;
    index_t a = -1;  // -1: no candidate yet (a lane past the row's end keeps none)
    for (index_t c = lane; c < N; c += 32) {
      const float x = inp(r, c);
      if (a < 0 || beats(x, c, m, a)) {
        m = x;
        a = c;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float w = __shfl_xor_sync(0xffffffffu, m, o);
      const index_t j = __shfl_xor_sync(0xffffffffu, a, o);
      if (j >= 0 && (a < 0 || beats(w, j, m, a))) {
        m = w;
        a = j;
      }
    }
    if (lane == 0) {
      max(r) = m;
      argmax(r) = a;
    }
  }
}

__global__ void row_max_backward_assign_kernel(dview<float, 2> dinp, dview<const float, 1> dmax,
                                               dview<const index_t, 1> argmax) {
  const index_t N = dinp.e[1], total = dinp.e[0] * N;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / N, c = i % N;
    // forward: max[r] = inp[r, argmax[r]]; the row is zeroed, then dinp[r, argmax[r]] += dmax[r]
    dinp(r, c) = c == argmax(r) ? 0.0f + dmax(r) : 0.0f;
  }
}

__global__ void row_max_backward_accumulate_kernel(dview<float, 2> dinp, dview<const float, 1> dmax,
                                                   dview<const index_t, 1> argmax) {
  const index_t R = dinp.e[0], N = dinp.e[1];
  for (index_t r = blockIdx.x * index_t(blockDim.x) + threadIdx.x; r < R; r += index_t(gridDim.x) * blockDim.x) {
    const index_t a = argmax(r);
    if (a >= 0 && a < N) dinp(r, a) += dmax(r);
  }
}

}  // namespace

void row_max_forward(cuda_backend& be, tensor_view<float, 1, cuda_space> max, tensor_view<index_t, 1, cuda_space> argmax,
                     tensor_view<const float, 2, cuda_space> inp) {
  const index_t R = inp.extent(0);
  if (R == 0) return;  // (the public op refuses N == 0 when R > 0)
  row_max_forward_kernel<<<grid_for(R, rows_per_block), threads, 0, stream_of(be)>>>(dv(max), dv(argmax), dv(inp));
  check_launch("row_max_forward");
}

void row_max_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 1, cuda_space> dmax,
                      tensor_view<const index_t, 1, cuda_space> argmax, grad_write mode) {
  const index_t R = dinp.extent(0), N = dinp.extent(1);
  if (R == 0 || N == 0) return;
  if (mode == grad_write::assign) {
    row_max_backward_assign_kernel<<<grid_for(R * N, threads), threads, 0, stream_of(be)>>>(dv(dinp), dv(dmax),
                                                                                           dv(argmax));
  } else {
    row_max_backward_accumulate_kernel<<<grid_for(R, threads), threads, 0, stream_of(be)>>>(dv(dinp), dv(dmax),
                                                                                           dv(argmax));
  }
  check_launch("row_max_backward");
}

}  // namespace blip2::cuda_detail
