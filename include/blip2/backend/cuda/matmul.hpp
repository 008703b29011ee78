// blip2/backend/cuda/matmul.hpp: the batched strided matmul through cuBLAS (src/cuda/gemm.cu).
// Dimensions: batch, M, K, N. Any strides where one of each matrix's two strides is 1 goes straight to
// cublasGemmStridedBatchedEx (row- or column-major, batch stride 0 broadcasts); other operands are first
// copied densely into the backend's scratch. float32 inputs by default; TF32 or bf16 inputs when the
// backend's options say so (cuda_backend.hpp).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"

namespace blip2 {
namespace cuda_detail {
// C[b] = alpha A[b] B[b] + beta C[b]; beta == 0 never reads C.
void gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> c, tensor_view<const float, 3, cuda_space> a,
          tensor_view<const float, 3, cuda_space> b, float alpha, float beta);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::matmul> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 3, cuda_space> c, tensor_view<const T, 3, cuda_space> a,
                  tensor_view<const T, 3, cuda_space> b, T alpha, T beta) {
    BLIP2_CUDA_FLOAT_ONLY(T, "matmul");
    cuda_detail::gemm(be, c, a, b, alpha, beta);
  }
};

}  // namespace blip2
