// src/cuda/relu.cu: ReLU, forward and backward: one thread per element (grid-stride over the R C elements
// in row-major order, any strides). forward keeps NaN (x > 0 || x != x ? x : 0, as reference/relu.hpp);
// backward passes dout where inp > 0 (a NaN inp gives 0).
#include "blip2/backend/cuda/relu.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

__global__ void relu_forward_kernel(dview<float, 2> out, dview<const float, 2> inp) {
  const index_t C = inp.e[1], n = inp.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    const float x = inp(r, c);
    out(r, c) = x > 0.0f || x != x ? x : 0.0f;  // NaN passes through
  }
}

__global__ void relu_backward_kernel(dview<float, 2> dinp, dview<const float, 2> dout, dview<const float, 2> inp,
                                     bool add) {
  const index_t C = inp.e[1], n = inp.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    const float d = inp(r, c) > 0.0f ? dout(r, c) : 0.0f;
    dinp(r, c) = (add ? dinp(r, c) : 0.0f) + d;  // as the reference: assign writes 0 + d
  }
}

}  // namespace

void relu_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp) {
  const index_t n = inp.size();
  if (n == 0) return;
  relu_forward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(out), dv(inp));
  check_launch("relu_forward");
}

void relu_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 2, cuda_space> dout,
                   tensor_view<const float, 2, cuda_space> inp, grad_write mode) {
  const index_t n = inp.size();
  if (n == 0) return;
  relu_backward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(dinp), dv(dout), dv(inp),
                                                               mode == grad_write::accumulate);
  check_launch("relu_backward");
}

}  // namespace blip2::cuda_detail
