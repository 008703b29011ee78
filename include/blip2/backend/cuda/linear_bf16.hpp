// blip2/backend/cuda/linear_bf16.hpp: out = inp weight^T + bias with the weight stored bfloat16
// (src/cuda/linear_bf16.cu). Dimensions: R rows, K input features, N output features.
// A few rows (R <= 8, an LLM's decode step): one warp per output feature reads its weight row once, as
// bfloat16, for all R rows, summing in float. More rows: the weight is widened exactly to float in scratch
// and one float32 GEMM runs (the reference's numbers up to summation order in both cases).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/bfloat16.hpp"

namespace blip2 {
namespace cuda_detail {
void linear_bf16_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out,
                         tensor_view<const float, 2, cuda_space> inp, tensor_view<const bfloat16, 2, cuda_space> weight,
                         tensor_view<const float, 1, cuda_space> bias);
}

template <>
struct kernel<cuda_backend, op::linear_bf16_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp,
                  tensor_view<const bfloat16, 2, cuda_space> weight, tensor_view<const T, 1, cuda_space> bias) {
    BLIP2_CUDA_FLOAT_ONLY(T, "linear_bf16_forward");
    cuda_detail::linear_bf16_forward(be, out, inp, weight, bias);
  }
};

}  // namespace blip2
