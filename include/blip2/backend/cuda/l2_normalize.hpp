// blip2/backend/cuda/l2_normalize.hpp: row L2 normalisation on the device, forward and backward.
// Dimensions: R rows, D features, any strides. Arguments (eps > 0) are checked by the public op
// (nn/l2_normalize.hpp); the branches (n >= eps, the clamped one, a NaN norm) are the reference's
// (reference/l2_normalize.hpp).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/l2_normalize.cu
void l2_normalize_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<float, 1, cuda_space> norm,
                          tensor_view<const float, 2, cuda_space> inp, float eps);
void l2_normalize_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                           tensor_view<const float, 2, cuda_space> dout, tensor_view<const float, 2, cuda_space> inp,
                           tensor_view<const float, 1, cuda_space> norm, float eps, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::l2_normalize_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<T, 1, cuda_space> norm,
                  tensor_view<const T, 2, cuda_space> inp, T eps) {
    BLIP2_CUDA_FLOAT_ONLY(T, "l2_normalize_forward");
    cuda_detail::l2_normalize_forward(be, out, norm, inp, eps);
  }
};

template <>
struct kernel<cuda_backend, op::l2_normalize_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> inp, tensor_view<const T, 1, cuda_space> norm, T eps,
                  grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "l2_normalize_backward");
    cuda_detail::l2_normalize_backward(be, dinp, dout, inp, norm, eps, mode);
  }
};

}  // namespace blip2
