// blip2/backend/cuda/softmax.hpp: softmax kernels on the device (float32).
// Dimensions: R rows, N entries per row. Arguments are checked by the public op (blip2::softmax_*); an
// empty mask view (data() == nullptr) means no mask, and the mask's strides may be 0 (broadcast).
// out may be inp (in place), dinp may be dout. One warp per row (N <= 1024) or one block per row.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/softmax.cu
void softmax_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                     tensor_view<const float, 2, cuda_space> mask);
void softmax_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                      tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> out,
                      grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::softmax_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp,
                  tensor_view<const T, 2, cuda_space> mask) {
    BLIP2_CUDA_FLOAT_ONLY(T, "softmax_forward");
    cuda_detail::softmax_forward(be, out, inp, mask);
  }
};

template <>
struct kernel<cuda_backend, op::softmax_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> out, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "softmax_backward");
    cuda_detail::softmax_backward(be, dinp, dout, out, mode);
  }
};

}  // namespace blip2
