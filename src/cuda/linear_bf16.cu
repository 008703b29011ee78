// src/cuda/linear_bf16.cu: out = inp weight^T + bias with a bfloat16 weight.
#include <cuda_bf16.h>

#include "blip2/backend/cuda/linear_bf16.hpp"
#include "blip2/backend/cuda/linear.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

constexpr int max_stream_rows = 8;  // up to this many rows, the weight is streamed once (decode steps)
constexpr int slot_widened = 110;

__device__ inline float widen(bfloat16 w) { return __uint_as_float(static_cast<unsigned>(w.bits) << 16); }

// One warp per output feature n: lanes stride over k, each keeps R partial sums; the warp then reduces.
__global__ void stream_kernel(dview<float, 2> out, dview<const float, 2> inp, dview<const bfloat16, 2> weight,
                              dview<const float, 1> bias, bool has_bias) {
  const index_t warps = index_t(gridDim.x) * (blockDim.x / 32);
  const index_t R = inp.e[0], K = inp.e[1], N = weight.e[0];
  const int lane = threadIdx.x % 32;
  for (index_t n = blockIdx.x * index_t(blockDim.x / 32) + threadIdx.x / 32; n < N; n += warps) {
    float acc[max_stream_rows] = {};
    for (index_t k = lane; k < K; k += 32) {
      const float w = widen(weight(n, k));
      for (int r = 0; r < max_stream_rows; ++r)
        if (r < R) acc[r] += inp(r, k) * w;
    }
    for (int r = 0; r < max_stream_rows; ++r) {
      if (r >= R) break;
      const float s = warp_sum(acc[r]);
      if (lane == 0) out(r, n) = (has_bias ? bias(n) : 0.0f) + s;
    }
  }
}

__global__ void widen_kernel(float* dst, dview<const bfloat16, 2> w) {
  const index_t K = w.e[1], n_all = w.e[0] * K;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n_all; i += index_t(gridDim.x) * blockDim.x)
    dst[i] = widen(w(i / K, i % K));
}

}  // namespace

void linear_bf16_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                         tensor_view<const bfloat16, 2, cuda_space> weight, tensor_view<const float, 1, cuda_space> bias) {
  const index_t R = out.extent(0), N = out.extent(1), K = inp.extent(1);
  if (R == 0 || N == 0) return;
  if (R <= max_stream_rows) {
    const unsigned threads = 256, warps_per_block = threads / 32;
    const index_t blocks = (N + warps_per_block - 1) / warps_per_block;
    stream_kernel<<<static_cast<unsigned>(blocks > 65535 ? 65535 : blocks), threads, 0, stream_of(be)>>>(
        dv(out), dv(inp), dv(weight), dv(bias), bias.data() != nullptr);
    check_launch("linear_bf16_forward");
    return;
  }
  // many rows: widen the weight once (exactly) and run the float32 linear
  auto* w = static_cast<float*>(be.scratch(slot_widened, N * K * sizeof(float)));
  const index_t n = N * K;
  if (n > 0) {
    widen_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(w, dv(weight));
    check_launch("linear_bf16_forward: widen");
  }
  linear_forward(be, out, inp, tensor_view<const float, 2, cuda_space>(w, {N, K}), bias);
}

}  // namespace blip2::cuda_detail
