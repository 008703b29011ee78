// blip2/backend/cuda/dropout.hpp: seeded dropout on the device, forward and backward.
// Dimensions: R rows, C columns (flat index i = r C + c), any strides. The keep rule and the scale are the
// reference's functions (dropout_keep, dropout_scale in reference/dropout.hpp), run on the device, so the
// mask is the CPU's bit for bit. Arguments (p in [0, 1)) are checked by the public op (nn/dropout.hpp).
#pragma once
#include <cstdint>

#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/dropout.cu
void dropout_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                     double p, std::uint64_t seed);
void dropout_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                      tensor_view<const float, 2, cuda_space> dout, double p, std::uint64_t seed, grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::dropout_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const T, 2, cuda_space> inp, double p,
                  std::uint64_t seed) {
    BLIP2_CUDA_FLOAT_ONLY(T, "dropout_forward");
    cuda_detail::dropout_forward(be, out, inp, p, seed);
  }
};

template <>
struct kernel<cuda_backend, op::dropout_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dinp, tensor_view<const T, 2, cuda_space> dout,
                  double p, std::uint64_t seed, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "dropout_backward");
    cuda_detail::dropout_backward(be, dinp, dout, p, seed, mode);
  }
};

}  // namespace blip2
