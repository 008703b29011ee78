// src/cuda/l2_normalize.cu: row L2 normalisation, forward and backward: one block per row (grid-stride
// over the rows), its threads striding over the D features, with a block-wide sum (block_sum) for the
// row's sum of squares (forward) or inp . dout (backward). The branches are the reference's:
//   forward:  n = sqrt(sum inp^2) is stored unclamped; out = inp / (n >= eps ? n : eps), so a NaN norm
//             divides by eps (the row's NaN stays NaN, its norm is NaN)
//   backward: n >= eps: dinp = dout / n - inp (inp . dout) / n^3 (written as dout inv - inp k, inv = 1 / n,
//             k = dot inv inv inv); otherwise dinp = dout s, s = 1 / eps, or NaN when n is NaN
// Every thread of a block reads the same n, so the branch and the reductions are uniform over the block.
#include <cmath>

#include "blip2/backend/cuda/l2_normalize.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

__global__ void l2_normalize_forward_kernel(dview<float, 2> out, dview<float, 1> norm, dview<const float, 2> inp,
                                            float eps) {
  __shared__ float shared[32];
  const index_t R = inp.e[0], D = inp.e[1];
  for (index_t r = blockIdx.x; r < R; r += gridDim.x) {
    float ss = 0.0f;
    for (index_t d = threadIdx.x; d < D; d += blockDim.x) {
      const float x = inp(r, d);
      ss += x * x;
    }
    ss = block_sum(ss, shared);  // its barriers also order every read of inp before the writes (out may be inp)
    const float n = sqrtf(ss);
    const float denom = n >= eps ? n : eps;  // max(n, eps); a NaN norm divides by eps
    for (index_t d = threadIdx.x; d < D; d += blockDim.x) out(r, d) = inp(r, d) / denom;
    if (threadIdx.x == 0) norm(r) = n;
  }
}

__global__ void l2_normalize_backward_kernel(dview<float, 2> dinp, dview<const float, 2> dout, dview<const float, 2> inp,
                                             dview<const float, 1> norm, float eps, bool add) {
  __shared__ float shared[32];
  const index_t R = inp.e[0], D = inp.e[1];
  for (index_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float n = norm(r);
    if (n >= eps) {
      // forward: out = inp / n, n = ||inp||_2 (unclamped; like PyTorch's clamp_min, this branch at n == eps too)
      float dot = 0.0f;
      for (index_t d = threadIdx.x; d < D; d += blockDim.x) dot += inp(r, d) * dout(r, d);
      dot = block_sum(dot, shared);  // every read of dout before any write (dinp may be dout)
      const float inv = 1.0f / n;
      const float k = dot * inv * inv * inv;
      for (index_t d = threadIdx.x; d < D; d += blockDim.x)
        dinp(r, d) = (add ? dinp(r, d) : 0.0f) + dout(r, d) * inv - inp(r, d) * k;
    } else {
      // forward: out = inp / eps (the norm was clamped); dinp = dout / eps. A NaN norm lands here: NaN.
      const float s = isnan(n) ? n : 1.0f / eps;
      for (index_t d = threadIdx.x; d < D; d += blockDim.x) dinp(r, d) = (add ? dinp(r, d) : 0.0f) + dout(r, d) * s;
    }
  }
}

// Threads per row: D rounded up to a multiple of 32, at most 256 (block_sum wants whole warps).
unsigned threads_for(index_t D) {
  const index_t t = (D + 31) / 32 * 32;
  return static_cast<unsigned>(t < 32 ? 32 : (t > 256 ? 256 : t));
}
unsigned rows_grid(index_t R) { return static_cast<unsigned>(R > 65535 ? 65535 : R); }

}  // namespace

void l2_normalize_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<float, 1, cuda_space> norm,
                          tensor_view<const float, 2, cuda_space> inp, float eps) {
  const index_t R = inp.extent(0), D = inp.extent(1);
  if (R == 0) return;  // D == 0 still writes norm = 0 for each row, as the reference does
  l2_normalize_forward_kernel<<<rows_grid(R), threads_for(D), 0, stream_of(be)>>>(dv(out), dv(norm), dv(inp), eps);
  check_launch("l2_normalize_forward");
}

void l2_normalize_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                           tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> inp,
                           tensor_view<const float, 1, cuda_space> norm, float eps, grad_write mode) {
  const index_t R = inp.extent(0), D = inp.extent(1);
  if (R == 0 || D == 0) return;
  l2_normalize_backward_kernel<<<rows_grid(R), threads_for(D), 0, stream_of(be)>>>(dv(dinp), dv(dout), dv(inp), dv(norm),
                                                                                   eps, mode == grad_write::accumulate);
  check_launch("l2_normalize_backward");
}

}  // namespace blip2::cuda_detail
