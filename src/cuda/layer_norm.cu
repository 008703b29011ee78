// src/cuda/layer_norm.cu: LayerNorm forward and backward.
//   forward, backward's dinp: one warp per row when C <= 1024 (8 rows per 256-thread block), else one
//             block per row; rows past the grid are taken in a grid-stride loop.
//   dweight, dbias: column sums over rows, deterministic: blocks of 32 columns x 8 row lanes each sum one
//             chunk of rows (fixed order, then a fixed tree over the 8 lanes) into scratch; a second kernel
//             adds the chunks of each column in chunk order to dweight / dbias. One chunk adds directly.
#include "blip2/backend/cuda/layer_norm.hpp"
#include "common.cuh"
#include "row_team.cuh"

namespace blip2::cuda_detail {
namespace {


template <bool Warp>
__global__ void forward_kernel(dview<float, 2> out, dview<float, 1> mean, dview<float, 1> rstd,
                               dview<const float, 2> inp, dview<const float, 1> weight, dview<const float, 1> bias,
                               float eps) {
  __shared__ float shared[32];
  const row_team<Warp> t;
  const index_t R = inp.e[0], C = inp.e[1];
  for (index_t r = t.first; r < R; r += t.step) {
    float s = 0.0f;
    for (index_t c = t.lane; c < C; c += t.width) s += inp(r, c);
    const float m = t.sum(s, shared) / static_cast<float>(C);
    float v = 0.0f;  // two passes: the variance never goes negative
    for (index_t c = t.lane; c < C; c += t.width) {
      const float d = inp(r, c) - m;
      v += d * d;
    }
    v = t.sum(v, shared) / static_cast<float>(C);
    const float rs = 1.0f / sqrtf(v + eps);
    // out may be inp: each element is read and then written by the same thread, after both reductions
    for (index_t c = t.lane; c < C; c += t.width) out(r, c) = (inp(r, c) - m) * rs * weight(c) + bias(c);
    if (t.lane == 0) {
      mean(r) = m;
      rstd(r) = rs;
    }
  }
}

template <bool Warp>
__global__ void backward_dinp_kernel(dview<float, 2> dinp, dview<const float, 2> dout, dview<const float, 2> inp,
                                     dview<const float, 1> weight, dview<const float, 1> mean,
                                     dview<const float, 1> rstd, bool accumulate) {
  __shared__ float shared[32];
  const row_team<Warp> t;
  const index_t R = inp.e[0], C = inp.e[1];
  for (index_t r = t.first; r < R; r += t.step) {
    const float mr = mean(r), rr = rstd(r);
    // norm = (inp - mean) * rstd; dnorm = dout * weight
    float md = 0.0f, mdn = 0.0f;
    for (index_t c = t.lane; c < C; c += t.width) {
      const float norm = (inp(r, c) - mr) * rr;
      const float dnorm = dout(r, c) * weight(c);
      md += dnorm;
      mdn += dnorm * norm;
    }
    md = t.sum(md, shared) / static_cast<float>(C);
    mdn = t.sum(mdn, shared) / static_cast<float>(C);
    for (index_t c = t.lane; c < C; c += t.width) {
      const float norm = (inp(r, c) - mr) * rr;
      const float g = (dout(r, c) * weight(c) - md - norm * mdn) * rr;
      dinp(r, c) = (accumulate ? dinp(r, c) : 0.0f) + g;  // assign never reads dinp (it may hold NaN)
    }
  }
}

constexpr int param_cols = 32, param_lanes = 8;

// Block (32, 8), grid (column tiles, chunks). Chunk p covers rows [p rows_per_chunk, (p + 1) rows_per_chunk).
// direct: one chunk, so its sums go straight into dweight / dbias (+=); else into partial (chunk-major).
__global__ void param_partial_kernel(dview<float, 1> dweight, dview<float, 1> dbias, float* partial_w,
                                     float* partial_b, dview<const float, 2> dout, dview<const float, 2> inp,
                                     dview<const float, 1> mean, dview<const float, 1> rstd, index_t rows_per_chunk,
                                     bool want_w, bool want_b, bool direct) {
  __shared__ float sw[param_lanes][param_cols + 1];
  __shared__ float sb[param_lanes][param_cols + 1];
  const index_t R = inp.e[0], C = inp.e[1];
  const index_t c = index_t(blockIdx.x) * param_cols + threadIdx.x;
  const index_t p = blockIdx.y;
  const index_t begin = p * rows_per_chunk, end = begin + rows_per_chunk < R ? begin + rows_per_chunk : R;
  float dw = 0.0f, db = 0.0f;
  if (c < C)
    for (index_t r = begin + threadIdx.y; r < end; r += param_lanes) {
      const float d = dout(r, c);
      if (want_w) dw += d * (inp(r, c) - mean(r)) * rstd(r);
      if (want_b) db += d;
    }
  sw[threadIdx.y][threadIdx.x] = dw;
  sb[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  for (int y = 1; y < param_lanes; ++y) {
    dw += sw[y][threadIdx.x];
    db += sb[y][threadIdx.x];
  }
  if (direct) {
    if (want_w) dweight(c) += dw;
    if (want_b) dbias(c) += db;
  } else {
    if (want_w) partial_w[p * C + c] = dw;
    if (want_b) partial_b[p * C + c] = db;
  }
}

// One thread per column: the chunks' sums in chunk order, added to the parameter gradients.
__global__ void param_final_kernel(dview<float, 1> dweight, dview<float, 1> dbias, const float* partial_w,
                                   const float* partial_b, index_t C, index_t chunks, bool want_w, bool want_b) {
  for (index_t c = blockIdx.x * index_t(blockDim.x) + threadIdx.x; c < C; c += index_t(gridDim.x) * blockDim.x) {
    if (want_w) {
      float s = 0.0f;
      for (index_t p = 0; p < chunks; ++p) s += partial_w[p * C + c];
      dweight(c) += s;
    }
    if (want_b) {
      float s = 0.0f;
      for (index_t p = 0; p < chunks; ++p) s += partial_b[p * C + c];
      dbias(c) += s;
    }
  }
}

}  // namespace

void layer_norm_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<float, 1, cuda_space> mean,
                        tensor_view<float, 1, cuda_space> rstd, tensor_view<const float, 2, cuda_space> inp,
                        tensor_view<const float, 1, cuda_space> weight, tensor_view<const float, 1, cuda_space> bias,
                        float eps) {
  const index_t R = inp.extent(0), C = inp.extent(1);
  // C == 0 with R > 0 still runs: the reference writes mean = rstd = 0 / 0 = NaN there
  if (R == 0) return;
  const row_launch p = plan_rows(R, C);
  if (p.warp)
    forward_kernel<true><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(out), dv(mean), dv(rstd), dv(inp), dv(weight),
                                                                    dv(bias), eps);
  else
    forward_kernel<false><<<p.blocks, p.threads, 0, stream_of(be)>>>(dv(out), dv(mean), dv(rstd), dv(inp),
                                                                     dv(weight), dv(bias), eps);
  check_launch("layer_norm_forward");
}

void layer_norm_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                         tensor_view<float, 1, cuda_space> dweight, tensor_view<float, 1, cuda_space> dbias,
                         tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> inp,
                         tensor_view<const float, 1, cuda_space> weight, tensor_view<const float, 1, cuda_space> mean,
                         tensor_view<const float, 1, cuda_space> rstd, grad_write mode) {
  const index_t R = inp.extent(0), C = inp.extent(1);
  if (R == 0 || C == 0) return;
  cudaStream_t s = stream_of(be);
  // dinp first, then the parameter gradients, in the reference's order (dinp may alias dout)
  const row_launch p = plan_rows(R, C);
  const bool acc = mode == grad_write::accumulate;
  if (p.warp)
    backward_dinp_kernel<true><<<p.blocks, p.threads, 0, s>>>(dv(dinp), dv(dout), dv(inp), dv(weight), dv(mean),
                                                              dv(rstd), acc);
  else
    backward_dinp_kernel<false><<<p.blocks, p.threads, 0, s>>>(dv(dinp), dv(dout), dv(inp), dv(weight), dv(mean),
                                                               dv(rstd), acc);
  check_launch("layer_norm_backward (dinp)");

  // dweight, dbias: a frozen layer passes neither (empty views) and skips this; either may come alone
  const bool want_w = dweight.data() != nullptr, want_b = dbias.data() != nullptr;
  if (!want_w && !want_b) return;
  // chunks of at least 32 rows, at most 256 chunks; the split depends on R only (same sums every run)
  index_t chunks = (R + 31) / 32;
  if (chunks > 256) chunks = 256;
  const index_t rows_per_chunk = (R + chunks - 1) / chunks;
  chunks = (R + rows_per_chunk - 1) / rows_per_chunk;  // no empty chunk
  const bool direct = chunks == 1;
  float* partial_w = nullptr;
  float* partial_b = nullptr;
  if (!direct) {
    const std::size_t n = static_cast<std::size_t>(chunks * C);
    float* base = static_cast<float*>(be.scratch(0, 2 * n * sizeof(float)));
    partial_w = base;
    partial_b = base + n;
  }
  const dim3 block(param_cols, param_lanes);
  const dim3 grid(static_cast<unsigned>((C + param_cols - 1) / param_cols), static_cast<unsigned>(chunks));
  param_partial_kernel<<<grid, block, 0, s>>>(dv(dweight), dv(dbias), partial_w, partial_b, dv(dout), dv(inp),
                                             dv(mean), dv(rstd), rows_per_chunk, want_w, want_b, direct);
  check_launch("layer_norm_backward (parameter partial sums)");
  if (direct) return;
  const unsigned b = blocks_for(C, 256);
  param_final_kernel<<<b < grid_cap ? b : grid_cap, 256, 0, s>>>(dv(dweight), dv(dbias), partial_w, partial_b, C,
                                                                  chunks, want_w, want_b);
  check_launch("layer_norm_backward (parameter sums)");
}

}  // namespace blip2::cuda_detail
