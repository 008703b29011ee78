// blip2/backend/cuda/row_max.hpp: the max and argmax of each row on the device, forward and backward.
// Dimensions: R rows, N columns (N >= 1 when R > 0), any strides. Arguments are checked by the public op
// (nn/row_max.hpp); ties keep the first index and the first NaN of a row wins, as torch.max(dim) and
// reference/row_max.hpp. The public op checks argmax against [0, N) on the host only; here backward
// leaves a row whose argmax is outside [0, N) without its dmax (zeroed in assign mode, untouched in
// accumulate mode) rather than write outside dinp.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/row_max.cu
void row_max_forward(cuda_backend& be, tensor_view<float, 1, cuda_space> max, tensor_view<index_t, 1, cuda_space> argmax,
                     tensor_view<const float, 2, cuda_space> inp);
void row_max_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 1, cuda_space> dmax,
                      tensor_view<const index_t, 1, cuda_space> argmax, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::row_max_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 1, cuda_space> max, tensor_view<index_t, 1, cuda_space> argmax,
                  tensor_view<const T, 2, cuda_space> inp) {
    BLIP2_CUDA_FLOAT_ONLY(T, "row_max_forward");
    cuda_detail::row_max_forward(be, max, argmax, inp);
  }
};

template <>
struct kernel<cuda_backend, op::row_max_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 1, cuda_space> dmax,
                  tensor_view<const index_t, 1, cuda_space> argmax, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "row_max_backward");
    cuda_detail::row_max_backward(be, dinp, dmax, argmax, mode);
  }
};

}  // namespace blip2
