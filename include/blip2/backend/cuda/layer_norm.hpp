// blip2/backend/cuda/layer_norm.hpp: LayerNorm kernels on the device (float32).
// Dimensions: R rows, C channels. Arguments are checked by the public op (blip2::layer_norm_*).
//   forward:  one warp per row (C <= 1024) or one block per row; two passes for the variance, as the
//             reference.
//   backward: dinp as forward's rows; dweight +=, dbias += as column sums: per-chunk partial sums into
//             scratch, then a fixed-order sum per column (deterministic, no atomics). An empty dweight or
//             dbias view skips its work and leaves nothing written.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/layer_norm.cu
void layer_norm_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<float, 1, cuda_space> mean,
                        tensor_view<float, 1, cuda_space> rstd, tensor_view<const float, 2, cuda_space> inp,
                        tensor_view<const float, 1, cuda_space> weight, tensor_view<const float, 1, cuda_space> bias,
                        float eps);
void layer_norm_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                         tensor_view<float, 1, cuda_space> dweight, tensor_view<float, 1, cuda_space> dbias,
                         tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> inp,
                         tensor_view<const float, 1, cuda_space> weight, tensor_view<const float, 1, cuda_space> mean,
                         tensor_view<const float, 1, cuda_space> rstd, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::layer_norm_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<T, 1, cuda_space> mean,
                  tensor_view<T, 1, cuda_space> rstd, tensor_view<const T, 2, cuda_space> inp,
                  tensor_view<const T, 1, cuda_space> weight, tensor_view<const T, 1, cuda_space> bias, T eps) {
    BLIP2_CUDA_FLOAT_ONLY(T, "layer_norm_forward");
    cuda_detail::layer_norm_forward(be, out, mean, rstd, inp, weight, bias, eps);
  }
};

template <>
struct kernel<cuda_backend, op::layer_norm_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<T, 1, cuda_space> dweight,
                  tensor_view<T, 1, cuda_space> dbias, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> inp, tensor_view<const T, 1, cuda_space> weight,
                  tensor_view<const T, 1, cuda_space> mean, tensor_view<const T, 1, cuda_space> rstd,
                  grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "layer_norm_backward");
    cuda_detail::layer_norm_backward(be, dinp, dweight, dbias, dout, inp, weight, mean, rstd, mode);
  }
};

}  // namespace blip2
