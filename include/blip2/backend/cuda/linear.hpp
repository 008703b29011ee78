// blip2/backend/cuda/linear.hpp: linear forward and backward as cuBLAS GEMMs (src/cuda/linear.cu).
// Dimensions: R rows, K input features, N output features; an empty view (bias, dinp, dweight, dbias)
// means "none", as in the reference.
//   forward:  out = bias (broadcast, or 0), then out += inp weight^T        (one GEMM, beta = 1)
//   backward: dinp  = or += dout weight                                     (GEMM, beta = 0 or 1)
//             dweight += dout^T inp                                          (GEMM, beta = 1)
//             dbias += column sums of dout                                   (one thread per column)
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"

namespace blip2 {
namespace cuda_detail {
void linear_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                    tensor_view<const float, 2, cuda_space> weight, tensor_view<const float, 1, cuda_space> bias);
void linear_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<float, 2, cuda_space> dweight,
                     tensor_view<float, 1, cuda_space> dbias, tensor_view<const float, 2, cuda_space> dout,
                     tensor_view<const float, 2, cuda_space> inp, tensor_view<const float, 2, cuda_space> weight,
                     grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::linear_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp,
                  tensor_view<const T, 2, cuda_space> weight, tensor_view<const T, 1, cuda_space> bias) {
    BLIP2_CUDA_FLOAT_ONLY(T, "linear_forward");
    cuda_detail::linear_forward(be, out, inp, weight, bias);
  }
};

template <>
struct kernel<cuda_backend, op::linear_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<T, 2, cuda_space> dweight,
                  tensor_view<T, 1, cuda_space> dbias, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const T, 2, cuda_space> inp, tensor_view<const T, 2, cuda_space> weight, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "linear_backward");
    cuda_detail::linear_backward(be, dinp, dweight, dbias, dout, inp, weight, mode);
  }
};

}  // namespace blip2
