// src/cuda/attention_gemm.cu: attention as cuBLAS strided-batched GEMMs over the B NH heads, and the
// mask-table upload of user mask policies (attention.hpp).
//
// Dimensions: B batch, NH heads, T queries, S keys, HS head size. Every operand is a (B, NH) batch of
// matrices, element (b, h, r, c) at p + b sb + h sh + r sr + c sc: head h of a (B, X, C) view is (X, HS)
// with sb = stride(0), sh = HS stride(2), sr = stride(1), sc = stride(2), read in place. cuBLAS needs one
// matrix stride to be 1 and a leading dimension that covers the other extent; a view that is not like
// that is first copied densely into scratch (always, rounded to bfloat16, when matmul() == bf16). The
// (b, h) batch is one cuBLAS call when every operand's batch strides fold into one (sb == NH sh, or B or
// NH is 1); otherwise (q, k, v as column blocks of one (B, T, 3C) projection) one call per b, batch NH
// (or per h, batch B, whichever is fewer calls).
//   forward:  scores = q_h k_h^T / sqrt(HS) (into the probs cache where cuBLAS can write it, scratch
//             otherwise) -> masked softmax kernel, one warp per row: probs = softmax(scores + mask), and
//             dropped = probs f (scratch; also a dense copy where probs is not a GEMM operand) ->
//             out_h = dropped v_h.
//   backward: ddropped = dout_h v_h^T (scratch) -> softmax-backward kernel, one warp per row:
//             dscores = probs (ddropped f - sum_s probs ddropped f) / sqrt(HS), in place, and dropped ->
//             dv_h (+)= dropped^T dout_h, dq_h (+)= dscores k_h, dk_h (+)= dscores^T q_h (beta = 1 adds;
//             beta = 0 never reads the old gradient, so NaN there does not leak).
// TF32 (be.tf32()): CUBLAS_COMPUTE_32F_FAST_TF32; bf16: CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F, f32 outputs.
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "attention_common.cuh"

namespace blip2::cuda_detail {

void check_cublas(cublasStatus_t s, const char* what);  // backend.cu

namespace {

// Scratch slots of the attention kernels (attention_fused.cu uses 51).
constexpr int slot_table = 39, slot_q = 40, slot_k = 41, slot_v = 42, slot_scores = 43, slot_dropped = 44,
              slot_dq = 45, slot_dout = 46, slot_ds16 = 47, slot_dk = 48, slot_dv = 49;
constexpr int host_slot_table = 39;

// A (B, NH) batch of (rows, cols) matrices of float (or bf16) elements.
struct hmat {
  const void* p;
  bool bf16;
  index_t rows, cols, sb, sh, sr, sc;
};

hmat head_mat(const void* p, const extents_t<3>& e, const extents_t<3>& s, index_t NH) {
  const index_t HS = e[2] / NH;
  return {p, false, e[1], HS, s[0], HS * s[2], s[1], s[2]};
}
template <class T>
hmat head_mat(const tensor_view<T, 3, cuda_space>& x, index_t NH) {
  return head_mat(x.data(), x.extents(), x.strides(), NH);
}
template <class T>
hmat probs_mat(const tensor_view<T, 4, cuda_space>& p) {
  return {p.data(), false, p.extent(2), p.extent(3), p.stride(0), p.stride(1), p.stride(2), p.stride(3)};
}
hmat dense_mat(const void* p, bool bf16, index_t NH, index_t rows, index_t cols) {
  return {p, bf16, rows, cols, NH * rows * cols, rows * cols, cols, 1};
}
hmat transposed(hmat m) {
  std::swap(m.rows, m.cols);
  std::swap(m.sr, m.sc);
  return m;
}
template <class T>
dview<T, 4> dview_of(const hmat& m, index_t B, index_t NH) {
  return {static_cast<T*>(const_cast<void*>(m.p)), {B, NH, m.rows, m.cols}, {m.sb, m.sh, m.sr, m.sc}};
}

// The matrix as the cuBLAS operand X_c with op(X_c) = m^T (column-major): its rows contiguous (sc == 1,
// X_c = m^T with ld = sr, op N) or its columns (sr == 1, X_c = m with ld = sc, op T). Strides of
// extent-1 dimensions are never used: they are normalised first.
struct blas_operand {
  cublasOperation_t op;
  long long ld;
};
bool as_operand(hmat m, blas_operand& o) {
  if (m.cols == 1) m.sc = 1;
  if (m.rows == 1) m.sr = m.sc == 1 ? (m.cols > 1 ? m.cols : 1) : 1;
  if (m.sc == 1 && m.sr >= (m.cols > 1 ? m.cols : 1) && m.sr <= INT_MAX) {
    o = {CUBLAS_OP_N, m.sr};
    return true;
  }
  if (m.sr == 1 && m.sc >= (m.rows > 1 ? m.rows : 1) && m.sc <= INT_MAX) {
    o = {CUBLAS_OP_T, m.sc};
    return true;
  }
  return false;
}
bool gemm_ok(const hmat& m) {
  blas_operand o;
  return as_operand(m, o);
}

// The stride of the flat batch i = b NH + h, where there is one.
bool fold_stride(const hmat& m, index_t B, index_t NH, long long& stride) {
  if (NH == 1) {
    stride = m.sb;
  } else if (B == 1 || m.sb == NH * m.sh) {
    stride = m.sh;
  } else {
    return false;
  }
  return true;
}

void check_int(index_t x, const char* what) {
  if (x > INT_MAX) throw backend_error(std::string("cuda: attention: ") + what + " exceeds cuBLAS's int range");
}

// C[b, h] = alpha A[b, h] B[b, h] + beta C[b, h] over every head. C is float and a GEMM operand (gemm_ok);
// A and B are GEMM operands of the same element type.
void gemm(cuda_backend& be, index_t B, index_t NH, const hmat& C, const hmat& A, const hmat& Bm, float alpha,
          float beta) {
  blas_operand oc, oa, ob;
  if (!as_operand(C, oc) || !as_operand(A, ob) || !as_operand(Bm, oa))
    throw backend_error("cuda: attention: internal error: an operand cuBLAS cannot read");
  if (oc.op == CUBLAS_OP_T) {  // C stored column by column: compute C^T = B^T A^T instead
    gemm(be, B, NH, transposed(C), transposed(Bm), transposed(A), alpha, beta);
    return;
  }
  const index_t M = C.rows, N = C.cols, K = A.cols;
  if (B * NH == 0 || M == 0 || N == 0) return;
  check_int(M, "a matrix extent");
  check_int(N, "a matrix extent");
  check_int(K, "a matrix extent");
  // column-major: C^T (N, M) = op(B_c) (N, K) op(A_c) (K, M), op(X_c) = X^T
  const cudaDataType_t in_type = A.bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute =
      A.bf16 ? CUBLAS_COMPUTE_32F : (be.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  const std::size_t esz = A.bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
  auto h = static_cast<cublasHandle_t>(be.cublas());
  auto call = [&](index_t off_a, index_t off_b, index_t off_c, long long sa, long long sb, long long sc,
                  index_t count) {
    check_int(count, "the head count");
    const auto* pa = static_cast<const char*>(A.p) + off_a * static_cast<index_t>(esz);
    const auto* pb = static_cast<const char*>(Bm.p) + off_b * static_cast<index_t>(esz);
    float* pc = static_cast<float*>(const_cast<void*>(C.p)) + off_c;
    check_cublas(cublasGemmStridedBatchedEx(h, oa.op, ob.op, static_cast<int>(N), static_cast<int>(M),
                                            static_cast<int>(K), &alpha, pb, in_type, static_cast<int>(oa.ld), sb, pa,
                                            in_type, static_cast<int>(ob.ld), sa, &beta, pc, CUDA_R_32F,
                                            static_cast<int>(oc.ld), sc, static_cast<int>(count), compute,
                                            CUBLAS_GEMM_DEFAULT),
                 "attention GEMM");
  };
  long long fa, fb, fc;
  if (fold_stride(A, B, NH, fa) && fold_stride(Bm, B, NH, fb) && fold_stride(C, B, NH, fc)) {
    call(0, 0, 0, fa, fb, fc, B * NH);
  } else if (B <= NH) {
    for (index_t b = 0; b < B; ++b) call(b * A.sb, b * Bm.sb, b * C.sb, A.sh, Bm.sh, C.sh, NH);
  } else {
    for (index_t hh = 0; hh < NH; ++hh) call(hh * A.sh, hh * Bm.sh, hh * C.sh, A.sb, Bm.sb, C.sb, B);
  }
}

unsigned row_blocks(index_t rows, int rows_per_block) {
  const index_t b = (rows + rows_per_block - 1) / rows_per_block;
  if (b > 2147483647) throw backend_error("cuda: attention: too many rows for one launch");
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

__device__ __forceinline__ void store(float* p, index_t i, float x) { p[i] = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, index_t i, float x) { p[i] = __float2bfloat16_rn(x); }

// dst (B, NH, R, C) dense = src, rounded to bf16 when Out is __nv_bfloat16.
template <class Out>
__global__ void gather_kernel(Out* dst, dview<const float, 4> src, index_t n) {
  const index_t NH = src.e[1], R = src.e[2], C = src.e[3];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t c = i % C, r = (i / C) % R, h = (i / (C * R)) % NH, b = i / (C * R * NH);
    store(dst, i, src(b, h, r, c));
  }
}

// dst = (add ? dst : 0) + src, src dense (B, NH, R, C).
__global__ void scatter_kernel(dview<float, 4> dst, const float* src, index_t n, bool add) {
  const index_t NH = dst.e[1], R = dst.e[2], C = dst.e[3];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const index_t c = i % C, r = (i / C) % R, h = (i / (C * R)) % NH, b = i / (C * R * NH);
    float& x = dst(b, h, r, c);
    x = add ? x + src[i] : src[i];
  }
}

__global__ void zero_kernel(dview<float, 3> x, index_t n) {
  const index_t R = x.e[1], C = x.e[2];
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    x(i / (R * C), (i / C) % R, i % C) = 0.0f;
}

enum dropped_kind : int { dropped_none = 0, dropped_f32 = 1, dropped_bf16 = 2 };

__device__ __forceinline__ void store_dropped(void* d, int kind, index_t i, float x) {
  if (kind == dropped_f32)
    static_cast<float*>(d)[i] = x;
  else if (kind == dropped_bf16)
    static_cast<__nv_bfloat16*>(d)[i] = __float2bfloat16_rn(x);
}

constexpr int softmax_threads = 256, softmax_rows = softmax_threads / 32;  // a warp per row

// probs(b, h, t, :) = softmax(scores(b, h, t, :) + mask(b, t, :)); dropped[row S + s] = probs f.
// scores and probs may be the same memory: each lane reads and then writes only its own elements.
__global__ void __launch_bounds__(softmax_threads)
    masked_softmax_kernel(dview<const float, 4> scores, dview<float, 4> probs, device_mask mask,
                          dview<const float, 2> pad, void* dropped, int kind, double p, float drop_scale,
                          std::uint64_t seed, index_t rows) {
  const index_t row = blockIdx.x * index_t(softmax_rows) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // the whole warp
  const index_t NH = probs.e[1], T = probs.e[2], S = probs.e[3];
  const index_t b = row / (NH * T), h = (row / T) % NH, t = row % T;
  auto score = [&](index_t s) { return scores(b, h, t, s) + mask_value(mask, pad, b, t, s, S); };
  float mx = -INFINITY;  // NaN ignored, as the reference's `score > mx`
  for (index_t s = lane; s < S; s += 32) mx = fmaxf(mx, score(s));
  mx = warp_max(mx);
  float sum = 0.0f;
  for (index_t s = lane; s < S; s += 32) sum += expf(score(s) - mx);
  const float inv = 1.0f / warp_sum(sum);
  for (index_t s = lane; s < S; s += 32) {
    const float pr = expf(score(s) - mx) * inv;
    probs(b, h, t, s) = pr;
    if (kind != dropped_none)
      store_dropped(dropped, kind, row * S + s,
                    pr * dropout_factor(p, drop_scale, seed, static_cast<std::uint64_t>(row * S + s)));
  }
}

// dd (rows, S) dense: ddropped in, dscores out (and a bf16 copy in ds16 when given); dropped = probs f.
__global__ void __launch_bounds__(softmax_threads)
    softmax_backward_kernel(float* dd, __nv_bfloat16* ds16, dview<const float, 4> probs, void* dropped, int kind,
                            double p, float drop_scale, std::uint64_t seed, float scale, index_t rows) {
  const index_t row = blockIdx.x * index_t(softmax_rows) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const index_t NH = probs.e[1], T = probs.e[2], S = probs.e[3];
  const index_t b = row / (NH * T), h = (row / T) % NH, t = row % T;
  float* d = dd + row * S;
  // dprobs = ddropped f; dot = sum_s probs dprobs
  float dot = 0.0f;
  for (index_t s = lane; s < S; s += 32) {
    const float f = dropout_factor(p, drop_scale, seed, static_cast<std::uint64_t>(row * S + s));
    dot += probs(b, h, t, s) * (d[s] * f);
  }
  dot = warp_sum(dot);
  for (index_t s = lane; s < S; s += 32) {
    const float f = dropout_factor(p, drop_scale, seed, static_cast<std::uint64_t>(row * S + s));
    const float pr = probs(b, h, t, s);
    const float ds = pr * (d[s] * f - dot) * scale;
    d[s] = ds;
    if (ds16) ds16[row * S + s] = __float2bfloat16_rn(ds);
    if (kind != dropped_none) store_dropped(dropped, kind, row * S + s, pr * f);
  }
}

// m as a GEMM input: in place when cuBLAS can read it (and float is asked), else a dense copy in scratch.
hmat input(cuda_backend& be, int slot, const hmat& m, index_t B, index_t NH, bool bf16) {
  if (!bf16 && gemm_ok(m)) return m;
  const index_t n = B * NH * m.rows * m.cols;
  void* d = be.scratch(slot, static_cast<std::size_t>(n) * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
  if (n > 0) {
    if (bf16)
      gather_kernel<__nv_bfloat16><<<grid_for(n), 256, 0, stream_of(be)>>>(
          static_cast<__nv_bfloat16*>(d), dview_of<const float>(m, B, NH), n);
    else
      gather_kernel<float><<<grid_for(n), 256, 0, stream_of(be)>>>(static_cast<float*>(d),
                                                                              dview_of<const float>(m, B, NH), n);
    check_launch("attention (dense copy)");
  }
  return dense_mat(d, bf16, NH, m.rows, m.cols);
}

// target (+)= A B: in place when cuBLAS can write the target, else through a dense scratch result.
void gemm_into(cuda_backend& be, int slot, const hmat& target, const hmat& A, const hmat& Bm, index_t B, index_t NH,
               bool add) {
  if (gemm_ok(target)) {
    gemm(be, B, NH, target, A, Bm, 1.0f, add ? 1.0f : 0.0f);
    return;
  }
  const index_t n = B * NH * target.rows * target.cols;
  if (n == 0) return;
  auto* tmp = static_cast<float*>(be.scratch(slot, static_cast<std::size_t>(n) * sizeof(float)));
  gemm(be, B, NH, dense_mat(tmp, false, NH, target.rows, target.cols), A, Bm, 1.0f, 0.0f);
  scatter_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dview_of<float>(target, B, NH), tmp, n, add);
  check_launch("attention (scatter)");
}

void zero(cuda_backend& be, tensor_view<float, 3, cuda_space> x) {
  const index_t n = x.size();
  if (n == 0) return;
  zero_kernel<<<grid_for(n), 256, 0, stream_of(be)>>>(dv(x), n);
  check_launch("attention (zero)");
}

}  // namespace

const unsigned char* upload_mask_table(cuda_backend& be, const unsigned char* host, std::size_t bytes) {
  // the asynchronous copy reads the staging buffer later: wait until an earlier upload has read it
  be.synchronize();
  void* staging = be.host_staging(host_slot_table, bytes);
  std::memcpy(staging, host, bytes);
  void* d = be.scratch(slot_table, bytes);
  check(cudaMemcpyAsync(d, staging, bytes, cudaMemcpyHostToDevice, stream_of(be)), "attention mask table upload");
  return static_cast<const unsigned char*>(d);
}

void attention_forward_gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> out,
                            tensor_view<float, 4, cuda_space> probs, tensor_view<const float, 3, cuda_space> q,
                            tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                            index_t num_heads, device_mask mask, tensor_view<const float, 2, cuda_space> key_padding,
                            double dropout_p, std::uint64_t seed) {
  const index_t B = q.extent(0), T = q.extent(1), S = k.extent(1), NH = num_heads, HS = q.extent(2) / NH;
  if (B == 0 || T == 0) return;  // out and probs are empty
  if (HS == 0) {                 // no products: the fused kernel writes the reference's (NaN) probs
    attention_forward_fused(be, out, probs, q, k, v, num_heads, mask, key_padding, dropout_p, seed);
    return;
  }
  if (S == 0) {  // no keys: out = 0
    zero(be, out);
    return;
  }
  const bool bf16 = be.matmul() == cuda_backend::matmul_precision::bf16;
  const hmat Q = input(be, slot_q, head_mat(q, NH), B, NH, bf16);
  const hmat K = input(be, slot_k, head_mat(k, NH), B, NH, bf16);
  const hmat V = input(be, slot_v, head_mat(v, NH), B, NH, bf16);
  const index_t rows = B * NH * T, n = rows * S;

  // scores = q_h k_h^T / sqrt(HS), into probs when cuBLAS can write it
  const hmat P = probs_mat(probs);
  const bool probs_ok = gemm_ok(P);
  const hmat scores =
      probs_ok ? P : dense_mat(be.scratch(slot_scores, static_cast<std::size_t>(n) * sizeof(float)), false, NH, T, S);
  gemm(be, B, NH, scores, Q, transposed(K), 1.0f / std::sqrt(static_cast<float>(HS)), 0.0f);

  // probs = softmax(scores + mask); dropped = probs f, dense, where the product cannot read probs itself
  const int kind = bf16 ? dropped_bf16 : (dropout_p > 0.0 || !probs_ok ? dropped_f32 : dropped_none);
  void* dropped = kind == dropped_none
                      ? nullptr
                      : be.scratch(slot_dropped, static_cast<std::size_t>(n) *
                                                     (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
  masked_softmax_kernel<<<row_blocks(rows, softmax_rows), softmax_threads, 0, stream_of(be)>>>(
      dview_of<const float>(scores, B, NH), dv(probs), mask, padding_dview(key_padding), dropped, kind, dropout_p,
      blip2::dropout_scale<float>(dropout_p), seed, rows);
  check_launch("attention_forward (masked softmax)");

  // out_h = dropped v_h
  const hmat Dm = kind == dropped_none ? P : dense_mat(dropped, bf16, NH, T, S);
  gemm_into(be, slot_dq, head_mat(out, NH), Dm, V, B, NH, false);
}

void attention_backward_gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> dq,
                             tensor_view<float, 3, cuda_space> dk, tensor_view<float, 3, cuda_space> dv_,
                             tensor_view<const float, 3, cuda_space> dout, tensor_view<const float, 3, cuda_space> q,
                             tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                             tensor_view<const float, 4, cuda_space> probs, index_t num_heads, double dropout_p,
                             std::uint64_t seed, grad_write mode) {
  const index_t B = q.extent(0), T = q.extent(1), S = k.extent(1), NH = num_heads, HS = q.extent(2) / NH;
  const bool add = mode == grad_write::accumulate;
  if (B == 0 || HS == 0) return;  // no gradient element
  if (T == 0 || S == 0) {         // empty sums: the gradients are 0 (assign) or unchanged (accumulate)
    if (!add) {
      zero(be, dq);
      zero(be, dk);
      zero(be, dv_);
    }
    return;
  }
  const bool bf16 = be.matmul() == cuda_backend::matmul_precision::bf16;
  const hmat DO = input(be, slot_dout, head_mat(dout, NH), B, NH, bf16);
  const hmat V = input(be, slot_v, head_mat(v, NH), B, NH, bf16);
  const hmat K = input(be, slot_k, head_mat(k, NH), B, NH, bf16);
  const hmat Q = input(be, slot_q, head_mat(q, NH), B, NH, bf16);
  const index_t rows = B * NH * T, n = rows * S;

  // ddropped = dout_h v_h^T
  auto* dd = static_cast<float*>(be.scratch(slot_scores, static_cast<std::size_t>(n) * sizeof(float)));
  gemm(be, B, NH, dense_mat(dd, false, NH, T, S), DO, transposed(V), 1.0f, 0.0f);

  // dscores (in dd; bf16 copy for bf16 products), dropped = probs f where the products cannot read probs
  const hmat P = probs_mat(probs);
  const int kind = bf16 ? dropped_bf16 : (dropout_p > 0.0 || !gemm_ok(P) ? dropped_f32 : dropped_none);
  void* dropped = kind == dropped_none
                      ? nullptr
                      : be.scratch(slot_dropped, static_cast<std::size_t>(n) *
                                                     (bf16 ? sizeof(__nv_bfloat16) : sizeof(float)));
  auto* ds16 = bf16 ? static_cast<__nv_bfloat16*>(be.scratch(slot_ds16, static_cast<std::size_t>(n) *
                                                                            sizeof(__nv_bfloat16)))
                    : nullptr;
  softmax_backward_kernel<<<row_blocks(rows, softmax_rows), softmax_threads, 0, stream_of(be)>>>(
      dd, ds16, dv(probs), dropped, kind, dropout_p, blip2::dropout_scale<float>(dropout_p), seed,
      1.0f / std::sqrt(static_cast<float>(HS)), rows);
  check_launch("attention_backward (softmax backward)");

  const hmat Dm = kind == dropped_none ? P : dense_mat(dropped, bf16, NH, T, S);
  const hmat DS = bf16 ? dense_mat(ds16, true, NH, T, S) : dense_mat(dd, false, NH, T, S);
  gemm_into(be, slot_dv, head_mat(dv_, NH), transposed(Dm), DO, B, NH, add);  // dv_h (+)= dropped^T dout_h
  gemm_into(be, slot_dq, head_mat(dq, NH), DS, K, B, NH, add);                // dq_h (+)= dscores k_h
  gemm_into(be, slot_dk, head_mat(dk, NH), transposed(DS), Q, B, NH, add);    // dk_h (+)= dscores^T q_h
}

}  // namespace blip2::cuda_detail
