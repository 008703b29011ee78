// blip2/backend/cuda/gelu.hpp: the exact (erf) GELU on the device, forward and backward.
// Dimensions: R rows, C columns (any tensor, seen as rows), any strides. Arguments are checked by the
// public op (nn/gelu.hpp); the formulas and the NaN behaviour are the reference's (reference/gelu.hpp).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/gelu.cu
void gelu_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp);
void gelu_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 2, cuda_space> dout,
                   tensor_view<const float, 2, cuda_space> inp, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::gelu_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp) {
    BLIP2_CUDA_FLOAT_ONLY(T, "gelu_forward");
    cuda_detail::gelu_forward(be, out, inp);
  }
};

template <>
struct kernel<cuda_backend, op::gelu_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> inp, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "gelu_backward");
    cuda_detail::gelu_backward(be, dinp, dout, inp, mode);
  }
};

}  // namespace blip2
