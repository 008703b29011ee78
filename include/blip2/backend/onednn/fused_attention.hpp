// blip2/backend/onednn/fused_attention.hpp: attention for small heads in one pass per head, plain C++.
//
// oneDNN runs a batch of tiny matrices (a head of 4-32 queries over 4-32 keys of 16 channels) far below
// its speed on large ones: its batched gemm pays a fixed cost per matrix, its thread split pays one
// primitive call per head, and oneDNN 2.6 has no AVX2 softmax backward (softmax_v2 runs its reference
// code). The stage-1 demo's Q-Former spent a third of its step there. For such heads this file does the
// whole head at once, its (T, S) block and its keys and values staying in L1:
//   forward:  scores = q_h k_h^T / sqrt(HS) + mask; probs = softmax(scores) (cached);
//             out_h = (probs f) v_h, f the attention-probs dropout factor
//   backward: dprobs = (dout_h v_h^T) f; dv_h (+)= (probs f)^T dout_h;
//             dscores = probs (dprobs - rowsum(probs dprobs)); dq_h (+)= dscores k_h / sqrt(HS);
//             dk_h (+)= dscores^T q_h / sqrt(HS)
// The rule is every attention kernel's (blip2::attention_*): the mask asked element by element, the
// dropout of element i of (B, NH, T, S) drawn from (seed, i).
//
// Speed: the loops the compiler vectorises are axpys over contiguous rows (k_h and v_h are transposed
// into a per-thread buffer first, so a dot product against every key is an axpy too), and exp is
// exp_poly below, which vectorises where std::exp does not. No float sum is reordered: each dot product
// adds its HS terms in channel order, as the reference kernel does. The library is built without
// -march flags, so each head's work is compiled twice, for AVX2 + FMA and for the baseline, and the CPU
// picks (cpu_has_avx2_fma). Heads are independent (each owns its channels of out, dq, dk, dv) and are
// shared among the OpenMP threads. Dimensions: B batch, NH heads, T queries, S keys, HS head size.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "blip2/backend/reference/attention.hpp"
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/mask_policy.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BLIP2_FUSED_AVX2 1
#define BLIP2_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define BLIP2_FUSED_AVX2 0
#define BLIP2_TARGET_AVX2
#endif
#if defined(__GNUC__)
#define BLIP2_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define BLIP2_ALWAYS_INLINE inline
#endif

namespace blip2::onednn_detail {

// Whether attention of these sizes runs fused (the automatic choice): small heads over short sequences
// (the demo's HS 16, T and S 4-16) run much faster fused than through oneDNN's batched primitives, forward
// and backward; at BLIP-2's sizes (HS 64, T 32-64, S 32-257) the primitives are faster, their gemm
// reaching far more of the machine once the matrices are that large. benchmarks/bench_attention measures
// both; its figures are in benchmarks/README.md.
inline bool fused_attention_preferred(index_t T, index_t S, index_t HS) { return HS <= 32 && T * S <= 4096; }

// Whether the fused kernel can take these views: rows of channels contiguous, and no two batch entries
// of a tensor sharing memory (with a zero batch stride two heads would write the same floats).
template <class... Views>
bool fused_attention_fits(const Views&... v) {
  return ((v.stride(2) == 1 && (v.extent(0) <= 1 || v.stride(0) != 0)) && ...);
}

inline bool cpu_has_avx2_fma() {
#if BLIP2_FUSED_AVX2
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// exp(x) for x <= 0 (a softmax's shifted scores), Cephes' single-precision scheme: x = n ln 2 + r with
// |r| <= ln 2 / 2, e^r by a degree-7 polynomial, 2^n put into the exponent bits; relative error below
// 1e-7 (measured 8.3e-8 over [-87.3, 0] against exp in double). Below -87.33654 (where e^x = 2^-126, the
// smallest normal float) it returns 2^-126, not e^x: a masked score (-10000) then weighs 1.2e-38
// instead of 0, which a float sum of a row holding a 1 cannot see. NaN stays NaN.
// Written without a float comparison or floor(): under GCC's default -ftrapping-math either keeps the
// loop around it from vectorising.
BLIP2_ALWAYS_INLINE float exp_poly(float x) {
  // x = max(x, -87.33654), on the bits: for a negative float the unsigned order of the bits is the order
  // of |x|, and the bits above -inf's are NaNs, left alone
  constexpr std::uint32_t lowest = 0xC2AEAC4Fu;  // -87.33654f
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t below = static_cast<std::uint32_t>(u > lowest) & static_cast<std::uint32_t>(u <= 0xFF800000u);
  x = std::bit_cast<float>(u - below * (u - lowest));
  // n = round(x / ln 2): adding 1.5 2^23 leaves no bits for a fraction, so the sum is rounded to an
  // integer (round to nearest, the default mode), and that integer sits in the low mantissa bits
  constexpr float shifter = 12582912.0f;
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln 2 = 0.693359375 - 2.12194440e-4
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t e = std::bit_cast<std::int32_t>(t) - std::bit_cast<std::int32_t>(shifter);  // n, >= -126
  return p * std::bit_cast<float>((e + 127) << 23);
}

// Eight floats as one value (GCC's and clang's vector extension): one AVX register in the AVX2
// compilation, two SSE registers in the baseline one. Loads and stores go through memcpy (no alignment).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // float8 never crosses a call: every user is always_inline
typedef float float8 __attribute__((vector_size(32)));
BLIP2_ALWAYS_INLINE float8 load8(const float* p) {
  float8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
BLIP2_ALWAYS_INLINE void store8(float* p, const float8& v) { std::memcpy(p, &v, sizeof v); }

// a . b over n = N floats (N = 0: n given at run time; N a multiple of 8 runs in float8 steps)
template <index_t N>
BLIP2_ALWAYS_INLINE float dot_n(const float* __restrict a, const float* __restrict b, index_t n) {
  if constexpr (N > 0 && N % 8 == 0) {
    float8 acc = load8(a) * load8(b);
    for (index_t c = 8; c < N; c += 8) acc += load8(a + c) * load8(b + c);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  } else {
    float sum = 0.0f;
    for (index_t c = 0; c < n; ++c) sum += a[c] * b[c];
    return sum;
  }
}

// y += alpha x over n = N floats (as dot_n)
template <index_t N>
BLIP2_ALWAYS_INLINE void axpy_n(float* __restrict y, float alpha, const float* __restrict x, index_t n) {
  if constexpr (N > 0 && N % 8 == 0) {
    for (index_t c = 0; c < N; c += 8) store8(y + c, load8(y + c) + alpha * load8(x + c));
  } else {
    for (index_t c = 0; c < n; ++c) y[c] += alpha * x[c];
  }
}

// out (n = N floats) = (assign ? 0 : out) + sum_s w(s ws) rows(s), rows(s) = row(s) for s in [0, S), added
// in order of s: a row of sums kept in registers where N is a multiple of 8 (up to 64), else summed in
// buf (n floats)
template <index_t N, class Row>
BLIP2_ALWAYS_INLINE void weighted_rows(float* __restrict out, bool assign, const float* __restrict w, index_t ws,
                                       index_t S, Row&& row, index_t n, float* __restrict buf) {
  if constexpr (N > 0 && N % 8 == 0 && N <= 64) {
    float8 acc[N / 8] = {};
    for (index_t s = 0; s < S; ++s) {
      const float* __restrict r = row(s);
      for (index_t j = 0; j < N / 8; ++j) acc[j] += w[s * ws] * load8(r + 8 * j);
    }
    for (index_t j = 0; j < N / 8; ++j) store8(out + 8 * j, assign ? acc[j] : load8(out + 8 * j) + acc[j]);
  } else {
    for (index_t c = 0; c < n; ++c) buf[c] = 0.0f;
    for (index_t s = 0; s < S; ++s) axpy_n<0>(buf, w[s * ws], row(s), n);
    for (index_t c = 0; c < n; ++c) out[c] = assign ? buf[c] : out[c] + buf[c];
  }
}
#pragma GCC diagnostic pop

// One tensor's rows: row t of head h of batch b starts at data + b sb + t st + h HS.
struct head_rows {
  float* data;
  index_t sb, st;
  float* row(index_t b, index_t h, index_t HS, index_t t) const { return data + b * sb + t * st + h * HS; }
};
template <class T>
head_rows rows_of(const tensor_view<T, 3>& x) {
  return {const_cast<float*>(x.data()), x.stride(0), x.stride(1)};
}

// dst (S, HS) = the head's S rows of x, packed. The Q-Former's sequence-major buffers put a head's rows
// B C floats apart, a multiple of 4 KiB at the demo's sizes (144 x 64 floats), so that they all fall into
// one L1 set; read T times in place they thrash it (benchmarks/README.md has the measurement). Packed,
// they are read from memory once.
template <index_t N>
BLIP2_ALWAYS_INLINE void pack_rows(float* __restrict dst, const head_rows& x, index_t b, index_t h, index_t S, index_t HS) {
  for (index_t s = 0; s < S; ++s) {
    const float* __restrict r = x.row(b, h, HS, s);
    for (index_t c = 0; c < (N ? N : HS); ++c) dst[s * HS + c] = r[c];
  }
}

// Everything a head's work needs besides the mask.
struct fused_attention_args {
  head_rows q, k, v, out, dout, dq, dk, dv;
  float* probs;  // dense (B, NH, T, S)
  index_t NH, T, S, HS;
  float scale;
  double dropout_p;
  std::uint64_t seed;
  bool assign;  // backward: assign the gradients (else add to them)
  // the dropout factor of element (head i, query t, key s)
  float factor(index_t i, index_t t, index_t s) const {
    return detail::attention_dropout_factor<float>(seed, static_cast<std::uint64_t>((i * T + t) * S + s), dropout_p);
  }
};

// Head i forward, HS = N (N = 0: any HS). buf: 2 S HS + HS + S floats.
template <index_t N, class Mask>
BLIP2_ALWAYS_INLINE void forward_head(const fused_attention_args& a, const Mask& mask,
                                      const tensor_view<const float, 2>& key_padding, index_t i, float* buf) {
  const index_t b = i / a.NH, h = i % a.NH, S = a.S, HS = N ? N : a.HS;
  const bool masked = !std::is_same_v<Mask, bidirectional> || key_padding.data();
  float* __restrict kp = buf;          // (S, HS): k_h packed
  float* __restrict vp = kp + S * HS;  // (S, HS): v_h packed
  float* __restrict o = vp + S * HS;   // (HS): one output row's sums (when not in registers)
  float* __restrict w = o + HS;        // (S): one row's dropped probs
  pack_rows<N>(kp, a.k, b, h, S, HS);
  pack_rows<N>(vp, a.v, b, h, S, HS);
  for (index_t t = 0; t < a.T; ++t) {
    float* __restrict p = a.probs + (i * a.T + t) * S;
    // scores = q . k / sqrt(HS) + mask
    const float* __restrict qt = a.q.row(b, h, HS, t);
    for (index_t s = 0; s < S; ++s) p[s] = dot_n<N>(qt, kp + s * HS, HS) * a.scale;
    if (masked)
      for (index_t s = 0; s < S; ++s) p[s] += additive_mask<float>(mask, key_padding, b, t, s);
    // probs = softmax(scores), stable
    float mx = p[0];
    for (index_t s = 1; s < S; ++s) mx = p[s] > mx ? p[s] : mx;
    for (index_t s = 0; s < S; ++s) p[s] = exp_poly(p[s] - mx);
    float sum = 0.0f;
    for (index_t s = 0; s < S; ++s) sum += p[s];
    const float inv = 1.0f / sum;
    for (index_t s = 0; s < S; ++s) p[s] *= inv;
    // out = (probs f) v
    const float* wt = p;
    if (a.dropout_p > 0.0) {
      for (index_t s = 0; s < S; ++s) w[s] = p[s] * a.factor(i, t, s);
      wt = w;
    }
    weighted_rows<N>(a.out.row(b, h, HS, t), true, wt, 1, S, [&](index_t s) { return vp + s * HS; }, HS, o);
  }
}

// Head i backward, HS = N (N = 0: any HS). buf: 2 (T + S) HS + 2 T S + HS floats.
// Two sweeps: by query row (dprobs, dscores, dq), then by key (dk, dv: each a sum over the query rows,
// kept in registers and written once).
template <index_t N>
BLIP2_ALWAYS_INLINE void backward_head(const fused_attention_args& a, index_t i, float* buf) {
  const index_t b = i / a.NH, h = i % a.NH, T = a.T, S = a.S, HS = N ? N : a.HS;
  float* __restrict qp = buf;             // (T, HS): q_h packed
  float* __restrict gp = qp + T * HS;     // (T, HS): dout_h packed
  float* __restrict kp = gp + T * HS;     // (S, HS): k_h packed
  float* __restrict vp = kp + S * HS;     // (S, HS): v_h packed
  float* __restrict wd = vp + S * HS;     // (T, S): dropped probs, probs f
  float* __restrict ds = wd + T * S;      // (T, S): dprobs, then dscores
  float* __restrict sums = ds + T * S;    // (HS): a row of sums (when not in registers)
  pack_rows<N>(qp, a.q, b, h, T, HS);
  pack_rows<N>(gp, a.dout, b, h, T, HS);
  pack_rows<N>(kp, a.k, b, h, S, HS);
  pack_rows<N>(vp, a.v, b, h, S, HS);
  for (index_t t = 0; t < T; ++t) {
    const float* __restrict p = a.probs + (i * T + t) * S;
    const float* __restrict g = gp + t * HS;
    float* __restrict w = wd + t * S;
    float* __restrict dp = ds + t * S;
    // forward: out(t) = sum_s probs(t, s) f(s) v(s)
    //   dprobs(s) = f(s) dout(t) . v(s)  (dv below)
    for (index_t s = 0; s < S; ++s) dp[s] = dot_n<N>(g, vp + s * HS, HS);
    if (a.dropout_p > 0.0) {
      for (index_t s = 0; s < S; ++s) {
        const float f = a.factor(i, t, s);
        w[s] = p[s] * f;
        dp[s] *= f;
      }
    } else {
      for (index_t s = 0; s < S; ++s) w[s] = p[s];
    }
    float dot = 0.0f;
    for (index_t s = 0; s < S; ++s) dot += p[s] * dp[s];
    // forward: probs = softmax(scores), scores = q . k / sqrt(HS) + mask
    //   dscores(s) = probs(s) (dprobs(s) - dot);  dq(t) += sum_s dscores(s) k(s) / sqrt(HS)  (dk below)
    for (index_t s = 0; s < S; ++s) dp[s] = p[s] * (dp[s] - dot) * a.scale;
    weighted_rows<N>(a.dq.row(b, h, HS, t), a.assign, dp, 1, S, [&](index_t s) { return kp + s * HS; }, HS, sums);
  }
  //   dv(s) += sum_t probs(t, s) f(t, s) dout(t);  dk(s) += sum_t dscores(t, s) q(t) / sqrt(HS)
  for (index_t s = 0; s < S; ++s) {
    weighted_rows<N>(a.dv.row(b, h, HS, s), a.assign, wd + s, S, T, [&](index_t t) { return gp + t * HS; }, HS, sums);
    weighted_rows<N>(a.dk.row(b, h, HS, s), a.assign, ds + s, S, T, [&](index_t t) { return qp + t * HS; }, HS, sums);
  }
}

// Each head's work compiled for the baseline and for AVX2 + FMA, and for HS 16, 32 and any.
template <index_t N, class Mask>
void forward_head_baseline(const fused_attention_args& a, const Mask& m, const tensor_view<const float, 2>& pad,
                           index_t i, float* buf) {
  forward_head<N>(a, m, pad, i, buf);
}
template <index_t N>
void backward_head_baseline(const fused_attention_args& a, index_t i, float* buf) {
  backward_head<N>(a, i, buf);
}
#if BLIP2_FUSED_AVX2
template <index_t N, class Mask>
BLIP2_TARGET_AVX2 void forward_head_avx2(const fused_attention_args& a, const Mask& m,
                                         const tensor_view<const float, 2>& pad, index_t i, float* buf) {
  forward_head<N>(a, m, pad, i, buf);
}
template <index_t N>
BLIP2_TARGET_AVX2 void backward_head_avx2(const fused_attention_args& a, index_t i, float* buf) {
  backward_head<N>(a, i, buf);
}
#endif

// body(i, buf) for every head i, the heads shared among the OpenMP threads, each with its own buffer.
template <class Body>
void for_each_head(index_t heads, index_t buf_floats, Body&& body) {
#pragma omp parallel if (heads > 1)
  {
    std::vector<float> buf(static_cast<std::size_t>(buf_floats));
#pragma omp for schedule(static)
    for (index_t i = 0; i < heads; ++i) body(i, buf.data());
  }
}

// f(std::integral_constant<index_t, N>) with N = HS where HS is 16 or 32, else N = 0 (any HS).
template <class F>
void with_head_size(index_t HS, F&& f) {
  if (HS == 16) return f(std::integral_constant<index_t, 16>{});
  if (HS == 32) return f(std::integral_constant<index_t, 32>{});
  f(std::integral_constant<index_t, 0>{});
}

template <class Mask>
void fused_attention_forward(tensor_view<float, 3> out, tensor_view<float, 4> probs, tensor_view<const float, 3> q,
                             tensor_view<const float, 3> k, tensor_view<const float, 3> v, index_t NH,
                             const Mask& mask, tensor_view<const float, 2> key_padding, double dropout_p,
                             std::uint64_t seed, bool allow_avx2 = true) {
  const index_t T = q.extent(1), S = k.extent(1), HS = q.extent(2) / NH;
  fused_attention_args a{rows_of(q), rows_of(k), rows_of(v), rows_of(out), {}, {}, {}, {}, probs.data(), NH, T, S, HS,
                         1.0f / std::sqrt(static_cast<float>(HS)), dropout_p, seed, true};
  const bool avx2 = allow_avx2 && cpu_has_avx2_fma();
  with_head_size(HS, [&](auto n) {
    constexpr index_t N = decltype(n)::value;
    for_each_head(q.extent(0) * NH, 2 * S * HS + HS + S, [&](index_t i, float* buf) {
#if BLIP2_FUSED_AVX2
      if (avx2) return forward_head_avx2<N>(a, mask, key_padding, i, buf);
#endif
      (void)avx2;
      forward_head_baseline<N>(a, mask, key_padding, i, buf);
    });
  });
}

inline void fused_attention_backward(tensor_view<float, 3> dq, tensor_view<float, 3> dk, tensor_view<float, 3> dv,
                                     tensor_view<const float, 3> dout, tensor_view<const float, 3> q,
                                     tensor_view<const float, 3> k, tensor_view<const float, 3> v,
                                     tensor_view<const float, 4> probs, index_t NH, double dropout_p,
                                     std::uint64_t seed, grad_write mode, bool allow_avx2 = true) {
  const index_t T = q.extent(1), S = k.extent(1), HS = q.extent(2) / NH;
  fused_attention_args a{rows_of(q), rows_of(k), rows_of(v), {}, rows_of(dout), rows_of(dq), rows_of(dk), rows_of(dv),
                         const_cast<float*>(probs.data()), NH, T, S, HS, 1.0f / std::sqrt(static_cast<float>(HS)),
                         dropout_p, seed, mode == grad_write::assign};
  const bool avx2 = allow_avx2 && cpu_has_avx2_fma();
  with_head_size(HS, [&](auto n) {
    constexpr index_t N = decltype(n)::value;
    for_each_head(q.extent(0) * NH, 2 * (T + S) * HS + 2 * T * S + HS, [&](index_t i, float* buf) {
#if BLIP2_FUSED_AVX2
      if (avx2) return backward_head_avx2<N>(a, i, buf);
#endif
      (void)avx2;
      backward_head_baseline<N>(a, i, buf);
    });
  });
}

}  // namespace blip2::onednn_detail
