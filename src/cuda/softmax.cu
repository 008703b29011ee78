// src/cuda/softmax.cu: softmax over the last axis (with an optional additive mask, any strides, 0
// broadcasting), forward and backward. One warp per row when N <= 1024 (8 rows per 256-thread block), else
// one block per row; rows past the grid are taken in a grid-stride loop. Forward makes three passes over
// the row (max, sum of exponentials, output), backward two (dot, output).
#include "blip2/backend/cuda/softmax.hpp"
#include "common.cuh"
#include "row_team.cuh"

namespace blip2::cuda_detail {
namespace {


template <bool Warp>
__global__ void forward_kernel(dview<float, 2> out, dview<const float, 2> inp, dview<const float, 2> mask) {
  __shared__ float shared[32];
  const row_team<Warp> t;
  const index_t R = inp.e[0], N = inp.e[1];
  const bool masked = mask.p != nullptr;
  for (index_t r = t.first; r < R; r += t.step) {
    auto x = [&](index_t n) { return masked ? inp(r, n) + mask(r, n) : inp(r, n); };
    // the reference's max skips NaN (x > mx is false) and starts at -inf: so does fmaxf
    float mx = -INFINITY;
    for (index_t n = t.lane; n < N; n += t.width) mx = fmaxf(mx, x(n));
    mx = t.max(mx, shared);
    float sum = 0.0f;
    for (index_t n = t.lane; n < N; n += t.width) sum += expf(x(n) - mx);  // <= 1: no overflow
    sum = t.sum(sum, shared);
    const float inv = 1.0f / sum;
    // out may be inp: each element is read and then written by the same thread, after both reductions
    for (index_t n = t.lane; n < N; n += t.width) out(r, n) = expf(x(n) - mx) * inv;
  }
}

template <bool Warp>
__global__ void backward_kernel(dview<float, 2> dinp, dview<const float, 2> dout, dview<const float, 2> out,
                                bool accumulate) {
  __shared__ float shared[32];
  const row_team<Warp> t;
  const index_t R = out.e[0], N = out.e[1];
  for (index_t r = t.first; r < R; r += t.step) {
    // dx(r, n) = out(r, n) (dout(r, n) - sum_j dout(r, j) out(r, j))
    float dot = 0.0f;
    for (index_t n = t.lane; n < N; n += t.width) dot += dout(r, n) * out(r, n);
    dot = t.sum(dot, shared);  // the whole row is read before any of it is written (dinp may be dout)
    for (index_t n = t.lane; n < N; n += t.width) {
      const float g = out(r, n) * (dout(r, n) - dot);
      dinp(r, n) = (accumulate ? dinp(r, n) : 0.0f) + g;  // assign never reads dinp (it may hold NaN)
    }
  }
}

}  // namespace

void softmax_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                     tensor_view<const float, 2, cuda_space> mask) {
  const index_t R = inp.extent(0), N = inp.extent(1);
  if (R == 0 || N == 0) return;
  const row_launch p = plan_rows(R, N);
  if (p.warp)
    forward_kernel<true><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(out), dv(inp), dv(mask));
  else
    forward_kernel<false><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(out), dv(inp), dv(mask));
  check_launch("softmax_forward");
}

void softmax_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                      tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> out,
                      grad_write mode) {
  const index_t R = out.extent(0), N = out.extent(1);
  if (R == 0 || N == 0) return;
  const row_launch p = plan_rows(R, N);
  const bool acc = mode == grad_write::accumulate;
  if (p.warp)
    backward_kernel<true><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(dinp), dv(dout), dv(out), acc);
  else
    backward_kernel<false><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(dinp), dv(dout), dv(out), acc);
  check_launch("softmax_backward");
}

}  // namespace blip2::cuda_detail
