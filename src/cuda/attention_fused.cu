// src/cuda/attention_fused.cu: the fused attention kernels (head size <= 128).
//
// Dimensions: B batch, NH heads, T queries, S keys, HS head size (<= D, the kernel's compile-time width:
// 16, 32, 64 or 128; channels HS..D-1 are zeros in shared memory and never written out).
// Every kernel runs 128 threads as 32 groups of 4 lanes; a group owns one row of its tile (a query row,
// or a key row in the dk/dv kernel) and lane g of the group owns the tile columns g, g + 4, ... and the
// head channels g, g + 4, ... . Shared rows are padded to D + 1 floats (no bank conflicts).
//
// forward, one block per (b, h, tile of 32 query rows), key tiles of 32:
//   load Q tile; per key tile: load K tile -> scores = q.k / sqrt(HS) + mask (mask asked in the kernel),
//   written raw to the probs cache -> online softmax (running max m, running sum l, the accumulator
//   rescaled by exp(m_old - m_new)) -> P = exp(score - m) * dropout factor in shared memory -> load V tile
//   (same buffer) -> acc += P V. Then out = acc / l and the block rewrites its probs rows with the
//   normalised exp(score - m) * (1 / l), as the reference does.
// backward, two kernels (no atomics: each output element has one writer, sums in a fixed order):
//   dq kernel, one block per (b, h, tile of 32 query rows): pass 1 over key tiles, dprobs = (dout . v) f,
//   delta(t) = sum_s probs dprobs (kept in scratch for the second kernel); pass 2: dscores = probs (dprobs -
//   delta) / sqrt(HS) in shared memory, dq += dscores K.
//   dk/dv kernel, one block per (b, h, tile of 32 keys), V tile resident; loops over tiles of 16 query
//   rows: dprobs, dscores as above (probs from the cache), dv += (probs f)^T dout, dk += dscores^T q,
//   query rows in ascending order.
// bf16 mode (the backend's matmul() == bf16 with attention() == fused): the inputs of every product (q, k,
// v, dout, the dropped probs, dscores) are rounded to bfloat16 as they enter shared memory; sums in float.
// TF32 does not apply here: every product is a float32 FMA.
// Shared memory (D = 128): forward 37.5 KiB, dq 37.3 KiB, dk/dv 37.3 KiB, all static.
#include <cmath>
#include <cstdint>
#include <string>

#include "attention_common.cuh"

namespace blip2::cuda_detail {
namespace {

constexpr int threads = 128;
constexpr int tile_rows = 32;       // query rows per block (forward, dq), keys per block (dk/dv)
constexpr int tile_keys = 32;       // keys per tile (forward, dq)
constexpr int dkdv_tile_rows = 16;  // query rows per step of the dk/dv kernel
constexpr int slot_delta = 51;      // scratch: delta, (B, NH, T) floats

// rows x D of a (B, X, C) view's head h into shared (row stride D + 1), rows from x0; zeros past the end.
template <int D, int Rows>
__device__ __forceinline__ void load_tile(float* dst, const dview<const float, 3>& x, index_t b, index_t x0,
                                          index_t ch0, int HS, bool round) {
  const index_t X = x.e[1];
  for (int e = threadIdx.x; e < Rows * D; e += threads) {
    const int r = e / D, c = e % D;
    float val = 0.0f;
    if (x0 + r < X && c < HS) val = round_input(x(b, x0 + r, ch0 + c), round);
    dst[r * (D + 1) + c] = val;
  }
}

__device__ __forceinline__ float group_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float group_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

struct fused_args {
  int NH, HS;
  index_t tiles;  // tiles per head (query tiles, or key tiles for dk/dv)
  double p;       // dropout
  float drop_scale, scale;
  std::uint64_t seed;
  bool round;  // bf16 inputs
  bool add;    // grad_write::accumulate
};

template <int D>
__global__ void __launch_bounds__(threads)
    forward_kernel(dview<float, 3> out, dview<float, 4> probs, dview<const float, 3> q, dview<const float, 3> k,
                   dview<const float, 3> v, device_mask mask, dview<const float, 2> pad, fused_args a) {
  constexpr int LD = D + 1, LP = tile_keys + 1, NC = D / 4;
  __shared__ float qs[tile_rows * LD];
  __shared__ float kv[tile_keys * LD];  // K tile, then V tile
  __shared__ float ps[tile_rows * LP];  // exp(score - m) * dropout factor
  __shared__ float row_m[tile_rows], row_inv[tile_rows];

  const index_t T = q.e[1], S = k.e[1];
  const index_t bh = blockIdx.x / a.tiles, t0 = (blockIdx.x % a.tiles) * tile_rows;
  const index_t b = bh / a.NH, h = bh % a.NH, ch0 = h * a.HS;
  const int r = threadIdx.x >> 2, g = threadIdx.x & 3;
  const index_t t = t0 + r;
  const bool row_ok = t < T;
  const index_t row = bh * T + t;  // (b NH + h) T + t: dropout index row S + s

  load_tile<D, tile_rows>(qs, q, b, t0, ch0, a.HS, a.round);
  float acc[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (index_t s0 = 0; s0 < S; s0 += tile_keys) {
    __syncthreads();  // the previous V tile and P are read (the Q tile is written, first time)
    load_tile<D, tile_keys>(kv, k, b, s0, ch0, a.HS, a.round);
    __syncthreads();
    float sc[tile_keys / 4];
#pragma unroll
    for (int jj = 0; jj < tile_keys / 4; ++jj) sc[jj] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < D; ++c) {
      const float qc = qs[r * LD + c];
#pragma unroll
      for (int jj = 0; jj < tile_keys / 4; ++jj) sc[jj] += qc * kv[(g + 4 * jj) * LD + c];
    }
    // scores, the tile's maximum (NaN ignored, as the reference's `score > mx`)
    float tmax = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < tile_keys / 4; ++jj) {
      const index_t s = s0 + g + 4 * jj;
      if (s < S) {
        if (row_ok) {  // (rows past T: never written, and the mask table has no row for them)
          sc[jj] = sc[jj] * a.scale + mask_value(mask, pad, b, t, s, S);
          probs(b, h, t, s) = sc[jj];  // raw score; normalised at the end
        }
        tmax = fmaxf(tmax, sc[jj]);
      }
    }
    tmax = group_max(tmax);
    const float m_new = fmaxf(m, tmax);
    // rescale what was summed against the old maximum (nothing was while it is -inf)
    const float alpha = m_new == -INFINITY ? 1.0f : expf(m - m_new);
    // while the maximum is still -inf the tile's scores are -inf or NaN: a -inf score weighs 0 (as it does
    // against the finite maximum a later tile may bring; exp(-inf - -inf) would be NaN and poison l), a NaN
    // stays NaN; a row whose maximum stays -inf ends NaN as the reference's (l = 0, m = -inf below)
    const float m_exp = m_new == -INFINITY ? 0.0f : m_new;
    float tsum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < tile_keys / 4; ++jj) {
      const index_t s = s0 + g + 4 * jj;
      float pv = 0.0f;
      if (s < S) {
        const float e = expf(sc[jj] - m_exp);
        tsum += e;
        if (row_ok) pv = e * dropout_factor(a.p, a.drop_scale, a.seed, static_cast<std::uint64_t>(row * S + s));
      }
      ps[r * LP + g + 4 * jj] = round_input(pv, a.round);
    }
    l = l * alpha + group_sum(tsum);
    m = m_new;
#pragma unroll
    for (int i = 0; i < NC; ++i) acc[i] *= alpha;
    __syncthreads();  // the K tile is read
    load_tile<D, tile_keys>(kv, v, b, s0, ch0, a.HS, a.round);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < tile_keys; ++j) {
      const float pj = ps[r * LP + j];
#pragma unroll
      for (int i = 0; i < NC; ++i) acc[i] += pj * kv[j * LD + g + 4 * i];
    }
  }

  // out = acc / l (S == 0: no keys, out = 0 as the reference's empty sum)
  const float inv = 1.0f / l;
  if (g == 0) {
    row_m[r] = m;
    row_inv[r] = inv;
  }
  if (row_ok) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      const int c = g + 4 * i;
      if (c < a.HS) out(b, t, ch0 + c) = S > 0 ? acc[i] * inv : 0.0f;
    }
  }
  // probs = exp(score - m) * (1 / l), over the block's rows (raw scores written above by this block)
  __syncthreads();
  const index_t rows_here = T - t0 < tile_rows ? T - t0 : tile_rows;
  for (index_t e = threadIdx.x; e < rows_here * S; e += threads) {
    const int rr = static_cast<int>(e / S);
    const index_t s = e % S;
    float& x = probs(b, h, t0 + rr, s);
    x = expf(x - row_m[rr]) * row_inv[rr];
  }
}

template <int D>
__global__ void __launch_bounds__(threads)
    backward_dq_kernel(dview<float, 3> dq, float* delta_out, dview<const float, 3> dout, dview<const float, 3> k,
                       dview<const float, 3> v, dview<const float, 4> probs, fused_args a) {
  constexpr int LD = D + 1, LP = tile_keys + 1, NC = D / 4, NJ = tile_keys / 4;
  __shared__ float dos[tile_rows * LD];
  __shared__ float kv[tile_keys * LD];  // V tile, then K tile
  __shared__ float dss[tile_rows * LP];  // dscores of the tile

  const index_t T = dout.e[1], S = k.e[1];
  const index_t bh = blockIdx.x / a.tiles, t0 = (blockIdx.x % a.tiles) * tile_rows;
  const index_t b = bh / a.NH, h = bh % a.NH, ch0 = h * a.HS;
  const int r = threadIdx.x >> 2, g = threadIdx.x & 3;
  const index_t t = t0 + r;
  const bool row_ok = t < T;
  const index_t row = bh * T + t;

  load_tile<D, tile_rows>(dos, dout, b, t0, ch0, a.HS, a.round);

  // ddropped(s) = dout(t) . v(s) for the tile's keys (V tile in kv)
  auto dot_v = [&](float (&dp)[NJ]) {
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj) dp[jj] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < D; ++c) {
      const float dc = dos[r * LD + c];
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj) dp[jj] += dc * kv[(g + 4 * jj) * LD + c];
    }
  };

  // pass 1: delta = sum_s probs(s) dprobs(s), dprobs = ddropped f
  float delta = 0.0f;
  for (index_t s0 = 0; s0 < S; s0 += tile_keys) {
    __syncthreads();
    load_tile<D, tile_keys>(kv, v, b, s0, ch0, a.HS, a.round);
    __syncthreads();
    float dp[NJ];
    dot_v(dp);
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj) {
      const index_t s = s0 + g + 4 * jj;
      if (row_ok && s < S) {
        const float f = dropout_factor(a.p, a.drop_scale, a.seed, static_cast<std::uint64_t>(row * S + s));
        delta += probs(b, h, t, s) * (dp[jj] * f);
      }
    }
  }
  delta = group_sum(delta);
  if (row_ok && g == 0) delta_out[row] = delta;

  // pass 2: dscores = probs (dprobs - delta) / sqrt(HS); dq += dscores K
  float acc[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) acc[i] = 0.0f;
  for (index_t s0 = 0; s0 < S; s0 += tile_keys) {
    __syncthreads();  // the previous K tile and dscores are read
    load_tile<D, tile_keys>(kv, v, b, s0, ch0, a.HS, a.round);
    __syncthreads();
    float dp[NJ];
    dot_v(dp);
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj) {
      const index_t s = s0 + g + 4 * jj;
      float ds = 0.0f;
      if (row_ok && s < S) {
        const float f = dropout_factor(a.p, a.drop_scale, a.seed, static_cast<std::uint64_t>(row * S + s));
        ds = probs(b, h, t, s) * (dp[jj] * f - delta) * a.scale;
      }
      dss[r * LP + g + 4 * jj] = round_input(ds, a.round);
    }
    __syncthreads();  // the V tile is read
    load_tile<D, tile_keys>(kv, k, b, s0, ch0, a.HS, a.round);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < tile_keys; ++j) {
      const float dj = dss[r * LP + j];
#pragma unroll
      for (int i = 0; i < NC; ++i) acc[i] += dj * kv[j * LD + g + 4 * i];
    }
  }
  if (row_ok) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      const int c = g + 4 * i;
      if (c < a.HS) {
        float& x = dq(b, t, ch0 + c);
        x = a.add ? x + acc[i] : acc[i];
      }
    }
  }
}

template <int D>
__global__ void __launch_bounds__(threads)
    backward_dkdv_kernel(dview<float, 3> dk_out, dview<float, 3> dv_out, const float* delta_in, dview<const float, 3> dout,
                         dview<const float, 3> q, dview<const float, 3> v, dview<const float, 4> probs, fused_args a) {
  constexpr int LD = D + 1, LP = tile_rows + 1, NC = D / 4, NT = dkdv_tile_rows / 4;
  __shared__ float vs[tile_rows * LD];         // the block's V rows (keys)
  __shared__ float qs[dkdv_tile_rows * LD];    // query rows of the step
  __shared__ float dos[dkdv_tile_rows * LD];   // their dout rows
  __shared__ float ps[dkdv_tile_rows * LP];    // dropped probs (t, j)
  __shared__ float dss[dkdv_tile_rows * LP];   // dscores (t, j)

  const index_t T = q.e[1], S = v.e[1];
  const index_t bh = blockIdx.x / a.tiles, s0 = (blockIdx.x % a.tiles) * tile_rows;
  const index_t b = bh / a.NH, h = bh % a.NH, ch0 = h * a.HS;
  const int j = threadIdx.x >> 2, g = threadIdx.x & 3;
  const index_t s = s0 + j;
  const bool key_ok = s < S;

  load_tile<D, tile_rows>(vs, v, b, s0, ch0, a.HS, a.round);
  float adk[NC], adv[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) adk[i] = adv[i] = 0.0f;

  for (index_t t0 = 0; t0 < T; t0 += dkdv_tile_rows) {
    __syncthreads();  // the previous step's tiles are read (V written, first time)
    load_tile<D, dkdv_tile_rows>(qs, q, b, t0, ch0, a.HS, a.round);
    load_tile<D, dkdv_tile_rows>(dos, dout, b, t0, ch0, a.HS, a.round);
    __syncthreads();
    // entries (t0 + g + 4 tt, s): ddropped = dout . v
    float dp[NT];
#pragma unroll
    for (int tt = 0; tt < NT; ++tt) dp[tt] = 0.0f;
#pragma unroll 4
    for (int c = 0; c < D; ++c) {
      const float vc = vs[j * LD + c];
#pragma unroll
      for (int tt = 0; tt < NT; ++tt) dp[tt] += dos[(g + 4 * tt) * LD + c] * vc;
    }
#pragma unroll
    for (int tt = 0; tt < NT; ++tt) {
      const int tl = g + 4 * tt;
      const index_t t = t0 + tl;
      float dropped = 0.0f, ds = 0.0f;
      if (t < T && key_ok) {
        const index_t row = bh * T + t;
        const float f = dropout_factor(a.p, a.drop_scale, a.seed, static_cast<std::uint64_t>(row * S + s));
        const float pr = probs(b, h, t, s);
        dropped = pr * f;
        ds = pr * (dp[tt] * f - delta_in[row]) * a.scale;
      }
      ps[tl * LP + j] = round_input(dropped, a.round);
      dss[tl * LP + j] = round_input(ds, a.round);
    }
    __syncthreads();
    // dv(s) += dropped(t, s) dout(t); dk(s) += dscores(t, s) q(t), t ascending
#pragma unroll 4
    for (int tl = 0; tl < dkdv_tile_rows; ++tl) {
      const float pt = ps[tl * LP + j], dt = dss[tl * LP + j];
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        adv[i] += pt * dos[tl * LD + g + 4 * i];
        adk[i] += dt * qs[tl * LD + g + 4 * i];
      }
    }
  }
  if (key_ok) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      const int c = g + 4 * i;
      if (c < a.HS) {
        float& xk = dk_out(b, s, ch0 + c);
        xk = a.add ? xk + adk[i] : adk[i];
        float& xv = dv_out(b, s, ch0 + c);
        xv = a.add ? xv + adv[i] : adv[i];
      }
    }
  }
}

// f<D>() for the smallest kernel width D >= HS.
template <class F>
void with_width(index_t HS, F&& f) {
  if (HS <= 16)
    f.template operator()<16>();
  else if (HS <= 32)
    f.template operator()<32>();
  else if (HS <= 64)
    f.template operator()<64>();
  else if (HS <= 128)
    f.template operator()<128>();
  else
    throw backend_error("cuda: attention: the fused kernels take head sizes up to 128, got " + std::to_string(HS));
}

index_t tiles_of(index_t n, index_t tile) { return (n + tile - 1) / tile; }

unsigned grid_of(index_t blocks) {
  if (blocks > 2147483647) throw backend_error("cuda: attention: too many heads and rows for one launch");
  return static_cast<unsigned>(blocks);
}

}  // namespace

void attention_forward_fused(cuda_backend& be, tensor_view<float, 3, cuda_space> out,
                             tensor_view<float, 4, cuda_space> probs, tensor_view<const float, 3, cuda_space> q,
                             tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                             index_t num_heads, device_mask mask, tensor_view<const float, 2, cuda_space> key_padding,
                             double dropout_p, std::uint64_t seed) {
  const index_t B = q.extent(0), T = q.extent(1), NH = num_heads, HS = q.extent(2) / NH;
  const index_t tiles = tiles_of(T, tile_rows), blocks = B * NH * tiles;
  if (blocks == 0) return;
  fused_args a{};
  a.NH = static_cast<int>(NH);
  a.HS = static_cast<int>(HS);
  a.tiles = tiles;
  a.p = dropout_p;
  a.drop_scale = blip2::dropout_scale<float>(dropout_p);
  a.scale = 1.0f / std::sqrt(static_cast<float>(HS));  // as the reference: inf for HS == 0 (scores NaN)
  a.seed = seed;
  a.round = be.matmul() == cuda_backend::matmul_precision::bf16;
  with_width(HS, [&]<int D>() {
    forward_kernel<D><<<grid_of(blocks), threads, 0, stream_of(be)>>>(dv(out), dv(probs), dv(q), dv(k), dv(v), mask,
                                                                       padding_dview(key_padding), a);
  });
  check_launch("attention_forward (fused)");
}

void attention_backward_fused(cuda_backend& be, tensor_view<float, 3, cuda_space> dq,
                              tensor_view<float, 3, cuda_space> dk, tensor_view<float, 3, cuda_space> dv_,
                              tensor_view<const float, 3, cuda_space> dout, tensor_view<const float, 3, cuda_space> q,
                              tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                              tensor_view<const float, 4, cuda_space> probs, index_t num_heads, double dropout_p,
                              std::uint64_t seed, grad_write mode) {
  const index_t B = q.extent(0), T = q.extent(1), S = k.extent(1), NH = num_heads, HS = q.extent(2) / NH;
  if (B == 0 || HS == 0) return;  // no gradient element
  fused_args a{};
  a.NH = static_cast<int>(NH);
  a.HS = static_cast<int>(HS);
  a.p = dropout_p;
  a.drop_scale = blip2::dropout_scale<float>(dropout_p);
  a.scale = 1.0f / std::sqrt(static_cast<float>(HS));
  a.seed = seed;
  a.round = be.matmul() == cuda_backend::matmul_precision::bf16;
  a.add = mode == grad_write::accumulate;
  float* delta = T > 0 ? static_cast<float*>(be.scratch(slot_delta, static_cast<std::size_t>(B * NH * T) * sizeof(float)))
                       : nullptr;
  with_width(HS, [&]<int D>() {
    // dq and delta (for S == 0: dq = 0 or unchanged, delta = 0)
    fused_args aq = a;
    aq.tiles = tiles_of(T, tile_rows);
    if (B * NH * aq.tiles > 0) {
      backward_dq_kernel<D><<<grid_of(B * NH * aq.tiles), threads, 0, stream_of(be)>>>(dv(dq), delta, dv(dout), dv(k),
                                                                                        dv(v), dv(probs), aq);
      check_launch("attention_backward (fused, dq)");
    }
    // dk, dv (for T == 0: 0 or unchanged); after the dq kernel on the stream: reads delta
    fused_args akv = a;
    akv.tiles = tiles_of(S, tile_rows);
    if (B * NH * akv.tiles > 0) {
      backward_dkdv_kernel<D><<<grid_of(B * NH * akv.tiles), threads, 0, stream_of(be)>>>(
          dv(dk), dv(dv_), delta, dv(dout), dv(q), dv(v), dv(probs), akv);
      check_launch("attention_backward (fused, dk dv)");
    }
  });
}

}  // namespace blip2::cuda_detail
