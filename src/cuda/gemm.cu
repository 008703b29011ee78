// src/cuda/gemm.cu: C[b] = alpha A[b] B[b] + beta C[b] on cuBLAS, for row-major views of any strides.
//
// cuBLAS is column-major. A row-major (M, N) matrix with strides (s, 1) is, read column-major, its
// transpose with leading dimension s; one with strides (1, s) is itself, column-major. So the product is
// asked as C^T = B^T A^T, each operand passed with op N or T according to which of its strides is 1.
// Operands with neither stride 1 (or a leading dimension cuBLAS refuses) are first copied densely into
// scratch; so is a C whose last stride is not 1 (the result is then copied back).
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "blip2/backend/cuda/copy.hpp"
#include "blip2/backend/cuda/matmul.hpp"
#include "blip2/core/check.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {

void check_cublas(cublasStatus_t s, const char* what);  // backend.cu

namespace {

// Scratch slots of this file (kept apart from the kernels' own).
constexpr int slot_a = 100, slot_b = 101, slot_c = 102, slot_a16 = 103, slot_b16 = 104;

// A (batch, rows, cols) row-major view as a cuBLAS operand of its transpose: op, leading dimension,
// batch stride. ok == false when neither matrix stride is 1 (the caller copies it densely).
struct operand {
  const void* p;
  cublasOperation_t op;
  long long ld, batch_stride;
  bool ok;
};
operand as_operand(const float* p, index_t rows, index_t cols, index_t s_batch, index_t s_row, index_t s_col) {
  // a stride of an extent-1 dimension is never used: normalise it so the checks below see a layout
  if (cols == 1) s_col = 1;
  if (rows == 1) s_row = cols;
  // a negative batch stride (a reversed batch) is not a documented cuBLAS stride: copy it densely
  if (s_batch < 0) return {p, CUBLAS_OP_N, 0, 0, false};
  if (s_col == 1 && s_row >= (cols > 1 ? cols : 1)) return {p, CUBLAS_OP_N, s_row, s_batch, true};
  if (s_row == 1 && s_col >= (rows > 1 ? rows : 1)) return {p, CUBLAS_OP_T, s_col, s_batch, true};
  return {p, CUBLAS_OP_N, 0, 0, false};
}

tensor_view<float, 3, cuda_space> dense_copy(cuda_backend& be, int slot, tensor_view<const float, 3, cuda_space> v) {
  tensor_view<float, 3, cuda_space> d(static_cast<float*>(be.scratch(slot, v.size() * sizeof(float))), v.extents());
  copy_device(be, raw_of(detail::as_rank4(d)), raw_of(detail::as_rank4(v)));
  return d;
}

__global__ void to_bf16_kernel(__nv_bfloat16* dst, dview<const float, 3> src, index_t n) {
  const index_t R = src.e[1], C = src.e[2];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src(i / (R * C), (i / C) % R, i % C));
}
// The view rounded to bfloat16, dense (batch, rows, cols); a broadcast batch (stride 0) is kept once.
const __nv_bfloat16* bf16_copy(cuda_backend& be, int slot, tensor_view<const float, 3, cuda_space> v, index_t& batch_stride) {
  const bool broadcast = v.stride(0) == 0;
  tensor_view<const float, 3, cuda_space> src = v;
  if (broadcast) src = tensor_view<const float, 3, cuda_space>(v.data(), {1, v.extent(1), v.extent(2)}, v.strides());
  const index_t n = src.size();
  auto* d = static_cast<__nv_bfloat16*>(be.scratch(slot, n * sizeof(__nv_bfloat16)));
  const unsigned blocks = grid_for(n);
  to_bf16_kernel<<<blocks, 256, 0, stream_of(be)>>>(d, dv(src), n);
  check_launch("gemm: round to bf16");
  batch_stride = broadcast ? 0 : v.extent(1) * v.extent(2);
  return d;
}

__global__ void scale_kernel(dview<float, 3> c, float beta, index_t n) {
  const index_t M = c.e[1], N = c.e[2];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    float& x = c(i / (M * N), (i / N) % M, i % N);
    x = beta == 0.0f ? 0.0f : beta * x;
  }
}

}  // namespace

void gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> c, tensor_view<const float, 3, cuda_space> a,
          tensor_view<const float, 3, cuda_space> b, float alpha, float beta) {
  const index_t batch = c.extent(0), M = c.extent(1), N = c.extent(2), K = a.extent(2);
  if (batch == 0 || M == 0 || N == 0) return;
  if (K == 0) {  // an empty sum: C = beta C (beta == 0: zeros, whatever C held)
    const index_t n = c.size();
    scale_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(c), beta, n);
    check_launch("gemm: K = 0");
    return;
  }
  // C must be row-major with unit column stride (read column-major: C^T, leading dimension its row stride)
  tensor_view<float, 3, cuda_space> c_out = c;
  const bool c_dense = (N == 1 || c.stride(2) == 1) && (M == 1 || c.stride(1) >= N) && (batch == 1 || c.stride(0) > 0);
  if (!c_dense) {
    c_out = tensor_view<float, 3, cuda_space>(static_cast<float*>(be.scratch(slot_c, c.size() * sizeof(float))), c.extents());
    if (beta != 0.0f) copy_device(be, raw_of(detail::as_rank4(c_out)), raw_of(detail::as_rank4(tensor_view<const float, 3, cuda_space>(c))));
  }
  const long long ldc = M == 1 ? N : c_out.stride(1), stride_c = c_out.stride(0);
  const bool bf16 = be.matmul() == cuda_backend::matmul_precision::bf16;
  cublasHandle_t h = static_cast<cublasHandle_t>(be.cublas());

  if (bf16) {
    // both inputs rounded to bfloat16 (dense, row-major), products and sums in float32
    index_t sa = 0, sb = 0;
    const __nv_bfloat16* a16 = bf16_copy(be, slot_a16, a, sa);
    const __nv_bfloat16* b16 = bf16_copy(be, slot_b16, b, sb);
    check_cublas(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, b16, CUDA_R_16BF,
                                            int(N), sb, a16, CUDA_R_16BF, int(K), sa, &beta, c_out.data(), CUDA_R_32F,
                                            int(ldc), stride_c, int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "gemm (bf16)");
  } else {
    operand oa = as_operand(a.data(), M, K, a.stride(0), a.stride(1), a.stride(2));
    if (!oa.ok) {
      const auto d = dense_copy(be, slot_a, a);
      oa = as_operand(d.data(), M, K, d.stride(0), d.stride(1), d.stride(2));
    }
    operand ob = as_operand(b.data(), K, N, b.stride(0), b.stride(1), b.stride(2));
    if (!ob.ok) {
      const auto d = dense_copy(be, slot_b, b);
      ob = as_operand(d.data(), K, N, d.stride(0), d.stride(1), d.stride(2));
    }
    const cublasComputeType_t compute = be.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    // column-major: C^T (N, M) = B^T (N, K) A^T (K, M)
    check_cublas(cublasGemmStridedBatchedEx(h, ob.op, oa.op, int(N), int(M), int(K), &alpha, ob.p, CUDA_R_32F, int(ob.ld),
                                            ob.batch_stride, oa.p, CUDA_R_32F, int(oa.ld), oa.batch_stride, &beta,
                                            c_out.data(), CUDA_R_32F, int(ldc), stride_c, int(batch), compute,
                                            CUBLAS_GEMM_DEFAULT),
                 "gemm");
  }
  if (!c_dense) copy_device(be, raw_of(detail::as_rank4(c)), raw_of(detail::as_rank4(tensor_view<const float, 3, cuda_space>(c_out))));
}

}  // namespace blip2::cuda_detail
