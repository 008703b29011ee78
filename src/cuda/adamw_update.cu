// src/cuda/adamw_update.cu: AdamW's float update, element by element, in the host rule's order
// (optim/adamw_rule.hpp: adamw_update_element for float) with each operation rounded on its own.
#include "blip2/backend/cuda/adamw_update.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

__global__ void adamw_kernel(dview<float, 1> p, dview<float, 1> m, dview<float, 1> v, dview<const float, 1> g,
                             adamw_float_constants k) {
  const index_t n = p.e[0];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const float gi = g(i), m0 = m(i), v0 = v(i);
    // m = m + w1 (g - m);  v = v b2 + (w2 g) g
    const float mi = __fadd_rn(m0, __fmul_rn(k.w1, __fsub_rn(gi, m0)));
    const float vi = __fadd_rn(__fmul_rn(v0, k.b2), __fmul_rn(__fmul_rn(k.w2, gi), gi));
    m(i) = mi;
    v(i) = vi;
    // p = p decay + (neg_step m) / (sqrt(v) inv_bc2 + eps)
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_bc2), k.eps);
    p(i) = __fadd_rn(__fmul_rn(p(i), k.decay), __fdiv_rn(__fmul_rn(k.neg_step, mi), denom));
  }
}

}  // namespace

void adamw_update(cuda_backend& be, tensor_view<float, 1, cuda_space> p, tensor_view<float, 1, cuda_space> m,
                  tensor_view<float, 1, cuda_space> v, tensor_view<const float, 1, cuda_space> g,
                  const adamw_step_constants& k) {
  const index_t n = p.extent(0);
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(p), dv(m), dv(v), dv(g), adamw_float_constants(k));
  check_launch("adamw_update");
}

}  // namespace blip2::cuda_detail
