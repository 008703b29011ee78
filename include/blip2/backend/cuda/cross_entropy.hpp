// blip2/backend/cuda/cross_entropy.hpp: softmax cross-entropy kernels on the device (float32).
// Dimensions: R rows, V classes. Arguments (shapes, smoothing) are checked by the public op
// (blip2::cross_entropy_*); loss, count and dloss are (1) tensors on the device, read and written there.
//   forward:  one warp per row (V <= 1024) or one block per row for lse and row_loss, then one block sums
//             the counted rows in a fixed order (deterministic) into loss and count.
//   backward: one thread per element of dlogits.
// Targets live on the device, so the public op cannot range-check them: a target outside [0, V) that is
// not ignore_index is never read through; its row's loss (so the mean loss) and its row's gradients are NaN.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/cross_entropy.cu
void cross_entropy_forward(cuda_backend& be, tensor_view<float, 1, cuda_space> loss,
                           tensor_view<float, 1, cuda_space> row_loss, tensor_view<float, 1, cuda_space> lse,
                           tensor_view<index_t, 1, cuda_space> count, tensor_view<const float, 2, cuda_space> logits,
                           tensor_view<const index_t, 1, cuda_space> targets, float smoothing, index_t ignore_index);
void cross_entropy_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dlogits,
                            tensor_view<const float, 1, cuda_space> dloss, tensor_view<const float, 2, cuda_space> logits,
                            tensor_view<const index_t, 1, cuda_space> targets, tensor_view<const float, 1, cuda_space> lse,
                            tensor_view<const index_t, 1, cuda_space> count, float smoothing, index_t ignore_index,
                            grad_write mode);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::cross_entropy_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 1, cuda_space> loss, tensor_view<T, 1, cuda_space> row_loss,
                  tensor_view<T, 1, cuda_space> lse, tensor_view<index_t, 1, cuda_space> count,
                  tensor_view<const T, 2, cuda_space> logits, tensor_view<const index_t, 1, cuda_space> targets,
                  T smoothing, index_t ignore_index) {
    BLIP2_CUDA_FLOAT_ONLY(T, "cross_entropy_forward");
    cuda_detail::cross_entropy_forward(be, loss, row_loss, lse, count, logits, targets, smoothing, ignore_index);
  }
};

template <>
struct kernel<cuda_backend, op::cross_entropy_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dlogits, tensor_view<const T, 1, cuda_space> dloss,
                  tensor_view<const T, 2, cuda_space> logits, tensor_view<const index_t, 1, cuda_space> targets,
                  tensor_view<const T, 1, cuda_space> lse, tensor_view<const index_t, 1, cuda_space> count,
                  T smoothing, index_t ignore_index, grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "cross_entropy_backward");
    cuda_detail::cross_entropy_backward(be, dlogits, dloss, logits, targets, lse, count, smoothing, ignore_index,
                                        mode);
  }
};

}  // namespace blip2
