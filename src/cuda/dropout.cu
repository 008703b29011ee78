// src/cuda/dropout.cu: seeded dropout, forward and backward: one thread per element (grid-stride over the
// flat row-major index i = r C + c, any strides). Each element's decision is blip2::dropout_keep(seed, i, p)
// and its scale blip2::dropout_scale<float>(p), the reference's constexpr functions compiled for the device
// (--expt-relaxed-constexpr): the same Philox draw and the same float comparison, so the mask is the CPU's
// bit for bit. A dropped element is exactly 0 (also for NaN or Inf inputs); p == 0 keeps everything.
// The products are rounded on their own (__fmul_rn), so the results are the CPU float kernel's too.
#include <cstdint>

#include "blip2/backend/cuda/dropout.hpp"
#include "blip2/backend/reference/dropout.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

__global__ void dropout_forward_kernel(dview<float, 2> out, dview<const float, 2> inp, double p, std::uint64_t seed) {
  const index_t C = inp.e[1], n = inp.e[0] * C;
  const float scale = blip2::dropout_scale<float>(p);
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    const bool keep = p == 0.0 || blip2::dropout_keep(seed, static_cast<std::uint64_t>(i), p);
    out(r, c) = keep ? __fmul_rn(inp(r, c), scale) : 0.0f;
  }
}

__global__ void dropout_backward_kernel(dview<float, 2> dinp, dview<const float, 2> dout, double p, std::uint64_t seed,
                                        bool add) {
  const index_t C = dout.e[1], n = dout.e[0] * C;
  const float scale = blip2::dropout_scale<float>(p);
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / C, c = i % C;
    // forward: out = keep(seed, i) ? inp * scale : 0 (the same mask, drawn again)
    const bool keep = p == 0.0 || blip2::dropout_keep(seed, static_cast<std::uint64_t>(i), p);
    const float g = keep ? __fmul_rn(dout(r, c), scale) : 0.0f;  // __fmul_rn: never fused into
    // an fma with the add below, so accumulate rounds as the CPU's float kernel does
    dinp(r, c) = (add ? dinp(r, c) : 0.0f) + g;  // as the reference: assign writes 0 + g
  }
}

}  // namespace

void dropout_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out, tensor_view<const float, 2, cuda_space> inp,
                     double p, std::uint64_t seed) {
  const index_t n = inp.size();
  if (n == 0) return;
  dropout_forward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(out), dv(inp), p, seed);
  check_launch("dropout_forward");
}

void dropout_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dinp,
                      tensor_view<const float, 2, cuda_space> dout, double p, std::uint64_t seed, grad_write mode) {
  const index_t n = dout.size();
  if (n == 0) return;
  dropout_backward_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(dinp), dv(dout), p, seed,
                                                                  mode == grad_write::accumulate);
  check_launch("dropout_backward");
}

}  // namespace blip2::cuda_detail
