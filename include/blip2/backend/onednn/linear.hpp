// blip2/backend/onednn/linear.hpp: linear through oneDNN's matmul primitive.
//
// forward:  out = inp weight^T + bias is one matmul with a bias input; weight^T is the (K, N) view of
//           weight with swapped strides (no copy).
// backward: dinp = dout weight (beta 0, or beta 1 to accumulate), dweight += dout^T inp (beta 1: the sum
//           post-op adds into the gradient), dbias += column sums of dout (a loop); each skipped when its
//           view is empty (a frozen layer passes no dweight and no dbias).
// forward with few rows: our streaming kernel instead of the matmul (decode steps; the rule and its reason
//           are use_stream_kernel's, below).
// With be.linear() == bf16, the products read dense copies of their inputs rounded to bfloat16
// (core/bfloat16.hpp), in scratch slots of their own; the bias, dbias (from the float32 dout) and every
// output stay float32.
// Dimensions: R rows, K input features, N output features.
#pragma once
#include <algorithm>
#include "blip2/core/bfloat16.hpp"
#include "blip2/backend/onednn/matmul.hpp"
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/onednn/stream_linear.hpp"
#include "blip2/backend/reference/linear.hpp"

namespace blip2 {
namespace onednn_detail {

// The scratch slots of the rounded copies (other kernels use slots 0 and 1).
inline constexpr int bf16_slot_a = 10, bf16_slot_b = 11, bf16_slot_c = 12;

// v itself in float32 mode; else a dense copy of v with every element rounded to bfloat16, in scratch
// slot `slot` (valid until the slot's next use).
inline tensor_view<const float, 2> linear_input(onednn_backend& be, int slot, tensor_view<const float, 2> v) {
  if (be.linear() == onednn_backend::linear_precision::f32) return v;
  const index_t R = v.extent(0), C = v.extent(1);
  float* d = be.scratch(slot, R * C);
  BLIP2_OMP_FOR
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < C; ++c) d[r * C + c] = round_to_bf16(v(r, c));
  return tensor_view<const float, 2>(d, {R, C});
}

// dbias (N) += sum over rows of dout (R, N), when dbias is given: output features are independent.
// Blocks of columns, the rows walked in order inside a block (contiguous reads; each column still sums
// its rows in row order).
inline void add_column_sums(tensor_view<float, 1> dbias, tensor_view<const float, 2> dout) {
  if (!dbias.data()) return;
  const index_t R = dout.extent(0), N = dout.extent(1);
  constexpr index_t block = 64;
  BLIP2_OMP_FOR
  for (index_t n0 = 0; n0 < N; n0 += block) {
    const index_t nb = std::min(block, N - n0);
    float acc[block] = {};
    for (index_t r = 0; r < R; ++r)
      for (index_t n = 0; n < nb; ++n) acc[n] += dout(r, n0 + n);
    for (index_t n = 0; n < nb; ++n) dbias(n0 + n) += acc[n];
  }
}

// The dispatch rule of the float32 forward, in this one place. A decode step of an LLM (R = 1 row per
// sequence, 5 with 5 beams) reads every weight once for 2 R flops each: its time is the weights' bytes
// over the memory bandwidth, and oneDNN 2.6's f32 matmul reads well below the bandwidth at such shapes,
// where stream_linear.hpp's kernel (the one linear_bf16_forward runs) streams the weights
// (benchmarks/README.md, "Decode bandwidth", has the measurements). So that kernel takes:
//   - R <= 8 rows (one tile of input rows: each weight loaded once for all of them);
//   - dense inputs: inp and the weight rows with unit column stride (any row strides);
//   - N K >= 2^20 weights (4 MiB of float32: a layer whose weights come from memory, bandwidth-bound;
//     smaller ones may be in cache, and were not measured);
//   - a vector kernel on this CPU (be.f32_kernel(): automatic, or one named; reference forces the matmul).
// Everything else (more rows reuse each weight, where a blocked GEMM wins) stays on oneDNN's matmul.
inline stream_kernels use_stream_kernel(onednn_backend& be, tensor_view<const float, 2> inp,
                                        tensor_view<const float, 2> weight) {
  const index_t R = inp.extent(0), K = inp.extent(1), N = weight.extent(0);
  const bool fits = R >= 1 && R <= 8 && N * K >= (index_t{1} << 20) && inp.stride(1) == 1 && weight.stride(1) == 1;
  if (!fits || be.f32_kernel() == stream_kernels::reference) return stream_kernels::reference;
  return stream_kernel_for(be.f32_kernel(), "linear_forward");
}

}  // namespace onednn_detail

template <>
struct kernel<onednn_backend, op::linear_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const T, 2> weight, tensor_view<const T, 1> bias) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::linear_forward>::run(be, out, inp, weight, bias);  // double: reference
    } else {
      using namespace onednn_detail;
      const auto a = linear_input(be, bf16_slot_a, inp), w = linear_input(be, bf16_slot_b, weight);
      if (const stream_kernels k = use_stream_kernel(be, a, w); k != stream_kernels::reference) {
        stream_linear_forward<float>(be, k, out, a, w, bias);  // out (R, N) = inp (R, K) weight^T + bias
      } else if (!matmul_fits(out, a, transpose(w)) || (bias.data() && bias.extent(0) > 1 && bias.stride(0) <= 0)) {
        // zero or negative strides inside a matrix, or a broadcast bias: no oneDNN descriptor for them
        reference_fallback<op::linear_forward>::run(be, out, a, w, bias);
      } else {
        // out (R, N) = inp (R, K) @ weight^T (K, N) + bias (1, N)
        run_matmul<2>(be, out, a, transpose(w), 1.0f, 0.0f, bias.data(), bias.data() ? bias.stride(0) : 1);
      }
    }
  }
};

template <>
struct kernel<onednn_backend, op::linear_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<T, 2> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 2> weight,
                  grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::linear_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mode);  // double
    } else {
      using namespace onednn_detail;
      // each rounded copy only when a product reads it: a frozen layer (dweight empty) rounds no inp
      const bool want_dinp = dinp.data(), want_dweight = dweight.data();
      const auto g = want_dinp || want_dweight ? linear_input(be, bf16_slot_a, dout) : dout;
      const auto x = want_dweight ? linear_input(be, bf16_slot_b, inp) : inp;
      const auto w = want_dinp ? linear_input(be, bf16_slot_c, weight) : weight;
      if ((want_dinp && !matmul_fits(dinp, g, w)) || (want_dweight && !matmul_fits(dweight, transpose(g), x))) {
        // zero or negative strides inside a matrix: no oneDNN descriptor for them (the rounded copies
        // are dense, but dinp or dweight may not be); dbias from the float32 dout, as below
        reference_fallback<op::linear_backward>::run(be, dinp, dweight, tensor_view<float, 1>{}, g, x, w, mode);
        add_column_sums(dbias, dout);
        return;
      }
      // forward: out = inp weight^T + bias
      // dinp (R, K) = dout (R, N) @ weight (N, K), assigned (beta 0) or accumulated (beta 1)
      if (want_dinp) run_matmul<2>(be, dinp, g, w, 1.0f, mode == grad_write::accumulate ? 1.0f : 0.0f);
      // dweight (N, K) += dout^T (N, R) @ inp (R, K), unless the layer is frozen
      if (want_dweight) run_matmul<2>(be, dweight, transpose(g), x, 1.0f, 1.0f);
      add_column_sums(dbias, dout);
    }
  }
};

}  // namespace blip2
