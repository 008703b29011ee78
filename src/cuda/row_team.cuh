// src/cuda/row_team.cuh: rows of a matrix shared out to the threads of a launch, for the kernels that
// reduce along rows (softmax, layer_norm, cross_entropy): rows up to 1024 long get one warp each (8 rows per
// 256-thread block), longer rows a whole block; a grid-stride loop covers rows beyond the grid.
#pragma once
#include "common.cuh"

namespace blip2::cuda_detail {

constexpr index_t warp_row_max = 1024;  // rows up to this long: one warp per row
constexpr unsigned grid_cap = 1u << 20;

// The threads that share one row: a warp (Warp) or the whole block. Every thread of a team walks the
// same rows, so the reductions are reached by the whole team.
template <bool Warp>
struct row_team {
  index_t first, step;
  int lane, width;
  __device__ row_team() {
    if constexpr (Warp) {
      const index_t per_block = blockDim.x / 32;
      lane = static_cast<int>(threadIdx.x % 32);
      width = 32;
      first = index_t(blockIdx.x) * per_block + threadIdx.x / 32;
      step = index_t(gridDim.x) * per_block;
    } else {
      lane = static_cast<int>(threadIdx.x);
      width = static_cast<int>(blockDim.x);
      first = blockIdx.x;
      step = gridDim.x;
    }
  }
  __device__ float sum(float x, float* shared) const {
    if constexpr (Warp)
      return warp_sum(x);
    else
      return block_sum(x, shared);
  }
  __device__ float max(float x, float* shared) const {
    if constexpr (Warp)
      return warp_max(x);
    else
      return block_max(x, shared);
  }
};

struct row_launch {
  bool warp;
  unsigned blocks, threads;
};
inline row_launch plan_rows(index_t R, index_t N) {
  if (N <= warp_row_max) {
    const unsigned b = blocks_for(R, 8);
    return {true, b < grid_cap ? b : grid_cap, 256};
  }
  const unsigned b = R < index_t(grid_cap) ? static_cast<unsigned>(R) : grid_cap;
  return {false, b, N <= 4096 ? 256u : 512u};
}

}  // namespace blip2::cuda_detail
