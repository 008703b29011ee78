// blip2/backend/onednn/linear_bf16.hpp: linear_bf16_forward on the oneDNN backend, a kernel of our own.
//
// Why our own: oneDNN 2.6 has a bf16 matmul only on AVX-512 CPUs, and a decode step of a frozen LLM is a
// matrix-vector product anyway (M = 1 row per sequence, or 5 with 5 beams): it reads every weight once
// and does 2 M flops per weight, so its time is the weights' bytes over the memory bandwidth. Weights
// stored in bfloat16 are half the bytes.
// The kernel is stream_linear.hpp's, instantiated for bfloat16 weights (widened in registers), for any M
// (more than 8 rows run in groups of 8). be.bf16_kernel() can name the vector version (tests, benchmarks).
// The weight needs dense rows (stride(1) == 1; any row stride); other weight views, double calls and CPUs
// without AVX2 + FMA run the reference loop.
// Dimensions: M input rows, K input features, N output features. Timings: benchmarks/decode_bandwidth.
#pragma once
#include <type_traits>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/onednn/stream_linear.hpp"
#include "blip2/backend/reference/linear_bf16.hpp"
#include "blip2/core/bfloat16.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::linear_bf16_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const bfloat16, 2> weight, tensor_view<const T, 1> bias) {
    using namespace onednn_detail;
    if constexpr (std::is_same_v<T, float>) {
      const stream_kernels k = stream_kernel_for(be.bf16_kernel());
      if (k != stream_kernels::reference && (inp.extent(1) <= 1 || weight.stride(1) == 1)) {
        stream_linear_forward<bfloat16>(be, k, out, inp, weight, bias);
        return;
      }
    }
    // double (the tests' oracle precision), no vector kernel on this CPU, or weight rows not dense
    reference_fallback<op::linear_bf16_forward>::run(be, out, inp, weight, bias);
  }
};

}  // namespace blip2
