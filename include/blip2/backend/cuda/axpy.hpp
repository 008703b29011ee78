// blip2/backend/cuda/axpy.hpp: y += alpha x on the device. Dimensions: R rows, C columns, any strides.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"

namespace blip2 {
namespace cuda_detail {
void axpy(cuda_backend& be, tensor_view<float, 2, cuda_space> y, tensor_view<const float, 2, cuda_space> x,
          float alpha);  // src/cuda/axpy.cu
}

template <>
struct kernel<cuda_backend, op::axpy> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> y, tensor_view<const T, 2, cuda_space> x, T alpha) {
    BLIP2_CUDA_FLOAT_ONLY(T, "axpy");
    cuda_detail::axpy(be, y, x, alpha);
  }
};

}  // namespace blip2
