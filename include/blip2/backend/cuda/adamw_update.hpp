// blip2/backend/cuda/adamw_update.hpp: AdamW's update of one segment on the device (src/cuda/adamw_update.cu):
// one thread per element, the float rule of optim/adamw_rule.hpp with every rounding explicit (no fused
// multiply-adds), so that a device step gives the bits of a host step.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/optim/adamw_rule.hpp"

namespace blip2 {
namespace cuda_detail {
void adamw_update(cuda_backend& be, tensor_view<float, 1, cuda_space> p, tensor_view<float, 1, cuda_space> m,
                  tensor_view<float, 1, cuda_space> v, tensor_view<const float, 1, cuda_space> g,
                  const adamw_step_constants& k);
}

template <>
struct kernel<cuda_backend, op::adamw_update> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 1, cuda_space> p, tensor_view<T, 1, cuda_space> m,
                  tensor_view<T, 1, cuda_space> v, tensor_view<const T, 1, cuda_space> g, const adamw_step_constants& k) {
    BLIP2_CUDA_FLOAT_ONLY(T, "adamw_update");
    cuda_detail::adamw_update(be, p, m, v, g, k);
  }
};

}  // namespace blip2
