// src/cuda/linear.cu: linear forward and backward as GEMMs (gemm.cu) plus the bias kernels.
#include "blip2/backend/cuda/linear.hpp"
#include "blip2/backend/cuda/matmul.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

// out(r, n) = bias(n), or 0 without a bias
__global__ void broadcast_bias_kernel(dview<float, 2> out, dview<const float, 1> bias, bool has_bias) {
  const index_t N = out.e[1], n_all = out.e[0] * N;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n_all; i += index_t(gridDim.x) * blockDim.x)
    out(i / N, i % N) = has_bias ? bias(i % N) : 0.0f;
}

// dbias(n) += sum_r dout(r, n): one thread per column, rows summed in order (deterministic)
__global__ void column_sum_kernel(dview<float, 1> dbias, dview<const float, 2> dout) {
  const index_t n = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (n >= dout.e[1]) return;
  float acc = 0.0f;
  for (index_t r = 0; r < dout.e[0]; ++r) acc += dout(r, n);
  dbias(n) += acc;
}

template <class T>
tensor_view<T, 3, cuda_space> batch1(tensor_view<T, 2, cuda_space> v) {
  return {v.data(), {1, v.extent(0), v.extent(1)}, {0, v.stride(0), v.stride(1)}};
}
template <class T>
tensor_view<T, 2, cuda_space> transposed(tensor_view<T, 2, cuda_space> v) {
  return {v.data(), {v.extent(1), v.extent(0)}, {v.stride(1), v.stride(0)}};
}

}  // namespace

void linear_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                    tensor_view<const float, 2, cuda_space> weight, tensor_view<const float, 1, cuda_space> bias) {
  const index_t R = out.extent(0), N = out.extent(1);
  if (R == 0 || N == 0) return;
  // forward: out = bias; out += inp weight^T
  const index_t n = R * N;
  broadcast_bias_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(
      dv(out), dv(bias), bias.data() != nullptr);
  check_launch("linear_forward: bias");
  gemm(be, batch1(out), batch1(inp), batch1(transposed(weight)), 1.0f, 1.0f);
}

void linear_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp, tensor_view<float, 2, cuda_space> dweight,
                     tensor_view<float, 1, cuda_space> dbias, tensor_view<const float, 2, cuda_space> dout,
                     tensor_view<const float, 2, cuda_space> inp, tensor_view<const float, 2, cuda_space> weight,
                     grad_write mode) {
  // forward: out(r, n) = bias(n) + sum_k inp(r, k) weight(n, k)
  //   dinp = dout weight (assigned, or added on the residual stream)
  if (dinp.data()) gemm(be, batch1(dinp), batch1(dout), batch1(weight), 1.0f, mode == grad_write::accumulate ? 1.0f : 0.0f);
  //   dweight += dout^T inp
  if (dweight.data()) gemm(be, batch1(dweight), batch1(transposed(dout)), batch1(inp), 1.0f, 1.0f);
  //   dbias += sum over rows of dout
  if (dbias.data() && dout.extent(1) > 0) {
    column_sum_kernel<<<blocks_for(dout.extent(1), 128), 128, 0, stream_of(be)>>>(dv(dbias), dv(dout));
    check_launch("linear_backward: dbias");
  }
}

}  // namespace blip2::cuda_detail
