// blip2/backend/cuda/relu.hpp: ReLU on the device, forward and backward.
// Dimensions: R rows, C columns (any tensor, seen as rows), any strides. Arguments are checked by the
// public op (nn/relu.hpp); NaN passes through forward, and backward takes the derivative at 0 as 0
// (reference/relu.hpp).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/relu.cu
void relu_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp);
void relu_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 2, cuda_space> dout,
                   tensor_view<const float, 2, cuda_space> inp, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::relu_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp) {
    BLIP2_CUDA_FLOAT_ONLY(T, "relu_forward");
    cuda_detail::relu_forward(be, out, inp);
  }
};

template <>
struct kernel<cuda_backend, op::relu_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> inp, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "relu_backward");
    cuda_detail::relu_backward(be, dinp, dout, inp, mode);
  }
};

}  // namespace blip2
