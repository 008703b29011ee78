// src/cuda/axpy.cu: y += alpha x, one thread per element (grid-stride).
#include "blip2/backend/cuda/axpy.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {
__global__ void axpy_kernel(dview<float, 2> y, dview<const float, 2> x, float alpha) {
  const index_t C = y.e[1], n = y.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    y(i / C, i % C) += alpha * x(i / C, i % C);
}
}  // namespace

void axpy(cuda_backend& be, tensor_view<float, 2, cuda_space> y, tensor_view<const float, 2, cuda_space> x, float alpha) {
  const index_t n = y.size();
  if (n == 0) return;
  const unsigned blocks = grid_for(n);
  axpy_kernel<<<blocks, 256, 0, stream_of(be)>>>(dv(y), dv(x), alpha);
  check_launch("axpy");
}

}  // namespace blip2::cuda_detail
