// src/cuda/gelu.cu: exact (erf) GELU, forward and backward: one thread per element (grid-stride over the
// R C elements in row-major order, any strides). The formulas are the reference's (reference/gelu.hpp),
// term for term, with the float constants it uses: NaN in, NaN out.
#include "blip2/backend/cuda/gelu.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

constexpr float inv_sqrt2 = static_cast<float>(0.70710678118654752440);
constexpr float inv_sqrt_2pi = static_cast<float>(0.39894228040143267794);

// gelu(x) = 0.5 x (1 + erf(x / sqrt 2))
__device__ inline float gelu_value(float x) { return 0.5f * x * (1.0f + erff(x * inv_sqrt2)); }

// gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
__device__ inline float gelu_derivative(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * inv_sqrt2));
  const float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
  return cdf + x * pdf;
}

__global__ void gelu_forward_kernel(dview<float, 2> out, dview<const float, 2> inp) {
  const index_t C = inp.e[1], n = inp.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    out(r, c) = gelu_value(inp(r, c));
  }
}

__global__ void gelu_backward_kernel(dview<float, 2> dinp, dview<const float, 2> dout, dview<const float, 2> inp,
                                     bool add) {
  const index_t C = inp.e[1], n = inp.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    const float d = dout(r, c) * gelu_derivative(inp(r, c));
    dinp(r, c) = (add ? dinp(r, c) : 0.0f) + d;  // as the reference: assign writes 0 + d
  }
}

}  // namespace

void gelu_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp) {
  const index_t n = inp.size();
  if (n == 0) return;
  gelu_forward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(out), dv(inp));
  check_launch("gelu_forward");
}

void gelu_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<const float, 2, cuda_space> dout,
                   tensor_view<const float, 2, cuda_space> inp, grad_write mode) {
  const index_t n = inp.size();
  if (n == 0) return;
  gelu_backward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(dinp), dv(dout), dv(inp),
                                                               mode == grad_write::accumulate);
  check_launch("gelu_backward");
}

}  // namespace blip2::cuda_detail
