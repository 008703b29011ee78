// blip2/backend/cuda/embedding.hpp: embedding on the device: the row gather (forward) and the scatter-add
// into the table's gradient (backward, atomic adds, so repeated ids sum in no fixed order).
// Dimensions: N looked-up positions, V table rows, C channels, any strides. The public op checks ids on
// the host only (nn/embedding.hpp); here the kernels check them: an id outside [0, V) is a value_error
// naming its flat position, the id and V, and then nothing has been written. That check waits for the
// stream (one small device-to-host copy per call).
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {
namespace cuda_detail {
// src/cuda/embedding.cu
void embedding_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out,
                       tensor_view<const index_t, 1, cuda_space> ids, tensor_view<const float, 2, cuda_space> table);
void embedding_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dtable,
                        tensor_view<const float, 2, cuda_space> dout, tensor_view<const index_t, 1, cuda_space> ids,
                        index_t padding_idx);
}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::embedding_forward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> out, tensor_view<const index_t, 1, cuda_space> ids,
                  tensor_view<const T, 2, cuda_space> table) {
    BLIP2_CUDA_FLOAT_ONLY(T, "embedding_forward");
    cuda_detail::embedding_forward(be, out, ids, table);
  }
};

template <>
struct kernel<cuda_backend, op::embedding_backward> {
  template <class T>
  static void run(cuda_backend& be, tensor_view<T, 2, cuda_space> dtable, tensor_view<const T, 2, cuda_space> dout,
                  tensor_view<const index_t, 1, cuda_space> ids, index_t padding_idx) {
    BLIP2_CUDA_FLOAT_ONLY(T, "embedding_backward");
    cuda_detail::embedding_backward(be, dtable, dout, ids, padding_idx);
  }
};

}  // namespace blip2
