// blip2/backend/onednn/stream_linear.hpp: out = inp weight^T + bias for a few input rows, streaming the
// weights once: our own kernel, for the decode steps of a frozen LLM.
//
// A decode step is a matrix-vector product (M = 1 row per sequence, or 5 with 5 beams): it reads every
// weight once and does 2 M flops per weight, so its time is the weights' bytes over the memory bandwidth.
// Two instantiations of one kernel template over the weight element W:
//   - bfloat16 (linear_bf16.hpp's linear_bf16_forward): half the bytes; bfloat16 is the upper half of a
//     float32, so widening is exact and costs two instructions in registers: zero-extend each 16-bit value
//     to 32 bits, shift it left by 16 (vpmovzxwd, vpslld);
//   - float (linear.hpp's linear_forward, for the shapes its dispatch rule sends here): a plain load.
//
// The idea:
//   - out(m, n) = bias(n) + sum_k inp(m, k) w(n, k) as float32 fused multiply-adds over k, 16 floats at a
//     time (AVX-512) or 8 (AVX2 + FMA);
//   - a tile of NR weight rows x MR input rows, MR <= 8 (all rows of a decode step): each weight vector,
//     loaded (and widened) once, serves the MR input rows, and each input vector the NR weight rows; the
//     NR x MR sums stay in registers (NR as large as fits: tile_rows below);
//   - each tile asks for its rows' weights 1 KiB ahead (software prefetch): with several rows read at once
//     the hardware prefetchers alone fell well short of the bandwidth;
//   - the OpenMP threads share blocks of weight rows, so each weight is read once per call; more than 8
//     input rows run in groups of 8, each group reading the block again (from cache).
// The K % 16 (or 8) last columns are summed in scalar code; the vector sums are added up at the end of a
// row, so the order of the float sum differs from the reference loop's (which sums k in order).
// The library is built without -march flags: both vector versions are compiled (GCC/clang target
// attributes) and the CPU picks at run time (be.bf16_kernel() and be.f32_kernel() can name one, for tests
// and benchmarks).
// The weight needs dense rows (stride(1) == 1; any row stride): the callers check it. An input without
// unit column stride is copied to a dense scratch first (M x K floats, small).
// Dimensions: M input rows, K input features, N output features. Timings: benchmarks/decode_bandwidth.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/core/bfloat16.hpp"
#include "blip2/core/errors.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define BLIP2_BF16_X86 1
#define BLIP2_BF16_TARGET_AVX512 __attribute__((target("avx512f")))
#define BLIP2_BF16_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define BLIP2_BF16_X86 0
#endif

namespace blip2::onednn_detail {

using stream_kernels = onednn_backend::stream_kernels;
using bf16_kernels = stream_kernels;

// Whether this CPU (and its OS) can run kernel k.
inline bool stream_kernel_available(stream_kernels k) {
#if BLIP2_BF16_X86
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (k == stream_kernels::avx512) return avx512;
  if (k == stream_kernels::avx2) return avx2;
#else
  if (k == stream_kernels::avx512 || k == stream_kernels::avx2) return false;
#endif
  return true;
}
inline bool bf16_kernel_available(stream_kernels k) { return stream_kernel_available(k); }

// The kernel that runs when `asked` is asked for: automatic takes the widest this CPU has (reference when
// it has neither); `op` names the caller in the error when the CPU lacks the one asked for.
inline stream_kernels stream_kernel_for(stream_kernels asked, const char* op = "linear_bf16_forward") {
  if (asked == stream_kernels::automatic) {
    for (auto k : {stream_kernels::avx512, stream_kernels::avx2})
      if (stream_kernel_available(k)) return k;
    return stream_kernels::reference;
  }
  BLIP2_CHECK(stream_kernel_available(asked), backend_error, "onednn: ", op, ": the ",
              asked == stream_kernels::avx512 ? "AVX-512" : "AVX2 + FMA", " kernel was asked for, but this CPU lacks it");
  return asked;
}
inline stream_kernels bf16_kernel_for(stream_kernels asked) { return stream_kernel_for(asked); }

// Weight rows per tile for MR input rows, with `registers` vector registers: the NR x MR sums, the NR
// weight vectors and one input vector must fit; at most 6 rows.
constexpr int tile_rows(int registers, int MR) { return std::clamp((registers - 1) / (MR + 1), 1, 6); }

// How far ahead in each weight row a tile asks for the weights, in bytes (benchmarks/README.md has the
// measurements behind it).
constexpr index_t prefetch_bytes = 1024;

inline float weight_value(float w) { return w; }
inline float weight_value(bfloat16 w) { return to_float(w); }

// acc[r * MR + m] += sum over k in [k0, K) of x[m * ldx + k] w[r * ldw + k]: the columns after the last
// full vector.
template <int MR, int NR, class W>
inline void stream_tile_tail(const float* x, index_t ldx, const W* w, index_t ldw, index_t k0, index_t K, float* acc) {
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MR; ++m)
      for (index_t k = k0; k < K; ++k) acc[r * MR + m] += x[m * ldx + k] * weight_value(w[r * ldw + k]);
}

#if BLIP2_BF16_X86
// acc[r * MR + m] = sum_k x[m * ldx + k] w[r * ldw + k], r < NR, m < MR: one tile, 16 columns a step.
template <int MR, int NR, class W>
BLIP2_BF16_TARGET_AVX512 void stream_tile_avx512(const float* x, index_t ldx, const W* w, index_t ldw, index_t K,
                                                 float* acc) {
  __m512 sum[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MR; ++m) sum[r][m] = _mm512_setzero_ps();
  index_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wk[NR];  // w(r, k .. k+15) as float32
    for (int r = 0; r < NR; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + r * ldw + k) + prefetch_bytes, _MM_HINT_T0);
      if constexpr (std::is_same_v<W, float>) {
        wk[r] = _mm512_loadu_ps(w + r * ldw + k);
      } else {  // bfloat16: each 16-bit value zero-extended, then shifted into the top half
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * ldw + k));
        wk[r] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      }
    }
    for (int m = 0; m < MR; ++m) {
      const __m512 xk = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < NR; ++r) sum[r][m] = _mm512_fmadd_ps(xk, wk[r], sum[r][m]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MR; ++m) {  // the 16 lanes added up (through memory: GCC 12's reduce intrinsics warn)
      float lane[16];
      _mm512_storeu_ps(lane, sum[r][m]);
      float s = 0;
      for (float v : lane) s += v;
      acc[r * MR + m] = s;
    }
  stream_tile_tail<MR, NR>(x, ldx, w, ldw, k, K, acc);
}

// The same with 8 columns a step (AVX2 + FMA: 16 vector registers).
template <int MR, int NR, class W>
BLIP2_BF16_TARGET_AVX2 void stream_tile_avx2(const float* x, index_t ldx, const W* w, index_t ldw, index_t K,
                                             float* acc) {
  __m256 sum[NR][MR];
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MR; ++m) sum[r][m] = _mm256_setzero_ps();
  index_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wk[NR];
    for (int r = 0; r < NR; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w + r * ldw + k) + prefetch_bytes, _MM_HINT_T0);
      if constexpr (std::is_same_v<W, float>) {
        wk[r] = _mm256_loadu_ps(w + r * ldw + k);
      } else {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + r * ldw + k));
        wk[r] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      }
    }
    for (int m = 0; m < MR; ++m) {
      const __m256 xk = _mm256_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < NR; ++r) sum[r][m] = _mm256_fmadd_ps(xk, wk[r], sum[r][m]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int m = 0; m < MR; ++m) {  // the 8 lanes added up: halves, then pairs, then the last two
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(sum[r][m]), _mm256_extractf128_ps(sum[r][m], 1));
      s = _mm_add_ps(s, _mm_movehl_ps(s, s));
      acc[r * MR + m] = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    }
  stream_tile_tail<MR, NR>(x, ldx, w, ldw, k, K, acc);
}
#endif

// The tiles of one kernel for one MR: `rows` weight rows at a time, and a tile of one row for the last.
template <class W>
struct stream_tiles {
  using tile_fn = void (*)(const float*, index_t, const W*, index_t, index_t, float*);
  int rows = 1;
  tile_fn wide = nullptr, single = nullptr;
};

template <class W>
stream_tiles<W> stream_tiles_for([[maybe_unused]] stream_kernels k, [[maybe_unused]] int MR) {
#if BLIP2_BF16_X86
  static constexpr auto table = []<int... I>(std::integer_sequence<int, I...>) {
    using row = std::array<stream_tiles<W>, 8>;  // MR = 1 .. 8
    return std::array<row, 2>{
        row{stream_tiles<W>{tile_rows(32, I + 1), &stream_tile_avx512<I + 1, tile_rows(32, I + 1), W>,
                            &stream_tile_avx512<I + 1, 1, W>}...},
        row{stream_tiles<W>{tile_rows(16, I + 1), &stream_tile_avx2<I + 1, tile_rows(16, I + 1), W>,
                            &stream_tile_avx2<I + 1, 1, W>}...}};
  }(std::make_integer_sequence<int, 8>{});
  return table[k == stream_kernels::avx512 ? 0 : 1][static_cast<std::size_t>(MR - 1)];
#else
  return {};  // never asked: stream_kernel_for gives reference, and the callers take their other path
#endif
}

// out (M, N) = inp (M, K) weight^T + bias with vector kernel k (avx512 or avx2, available on this CPU).
// weight (N, K) must have dense rows (stride(1) == 1, or K <= 1); bias may be empty.
template <class W>
void stream_linear_forward(onednn_backend& be, stream_kernels k, tensor_view<float, 2> out,
                           tensor_view<const float, 2> inp, tensor_view<const W, 2> weight,
                           tensor_view<const float, 1> bias) {
  const index_t M = inp.extent(0), K = inp.extent(1), N = weight.extent(0);
  // x: the input rows with unit column stride, or a dense copy of them
  const float* x = inp.data();
  index_t ldx = inp.stride(0);
  if (K > 1 && inp.stride(1) != 1) {
    float* d = be.scratch(0, M * K);  // (M, K)
    for (index_t m = 0; m < M; ++m)
      for (index_t c = 0; c < K; ++c) d[m * K + c] = inp(m, c);
    x = d, ldx = K;
  }
  const W* w = weight.data();
  const index_t ldw = weight.stride(0);
  // weight rows per OpenMP chunk: about 32, a whole number of the first group's tiles
  const index_t rows = stream_tiles_for<W>(k, static_cast<int>(std::min<index_t>(8, std::max<index_t>(1, M)))).rows;
  const index_t block = rows * (32 / rows);
  BLIP2_OMP_FOR
  for (index_t b = 0; b < (N + block - 1) / block; ++b) {
    const index_t n1 = std::min(N, (b + 1) * block);
    float acc[6 * 8];  // (NR, MR)
    for (index_t m0 = 0; m0 < M; m0 += 8) {
      const int mr = static_cast<int>(std::min<index_t>(8, M - m0));
      const stream_tiles<W> t = stream_tiles_for<W>(k, mr);
      for (index_t n = b * block; n < n1;) {
        const int nr = n + t.rows <= n1 ? t.rows : 1;
        (nr == t.rows ? t.wide : t.single)(x + m0 * ldx, ldx, w + n * ldw, ldw, K, acc);
        for (int r = 0; r < nr; ++r)
          for (int m = 0; m < mr; ++m) out(m0 + m, n + r) = acc[r * mr + m] + (bias.data() ? bias(n + r) : 0.0f);
        n += nr;
      }
    }
  }
}

}  // namespace blip2::onednn_detail
