// blip2/backend/cuda/attention.hpp: multi-head attention on the device (nn/attention.hpp states the op).
//
// Dimensions: B batch, NH heads, T query positions, S key positions, HS head size, C = NH HS.
// Two implementations of each direction, chosen per call by the backend's attention() setting:
//   fused        (src/cuda/attention_fused.cu) one block per (b, h, tile of query rows): scores with the
//                mask evaluated in the kernel, online softmax over key tiles held in shared memory, the
//                normalised probs written to the cache and out = dropout(probs) v. Backward: a kernel per
//                query tile (dq, and the row sums sum_s probs dprobs), then a kernel per key tile (dk, dv)
//                looping over the query rows: deterministic, no atomics. Head sizes up to 128.
//   batched GEMM (src/cuda/attention_gemm.cu) cuBLAS strided-batched products over the B NH heads, read in
//                place from the (B, T, C) views where their strides allow it (dense copies in scratch
//                otherwise, and always for bf16), a masked-softmax kernel, a softmax-backward kernel.
// automatic runs the fused kernels where HS <= 128 and the products are float32 (matmul() == f32), the
// GEMMs otherwise; `fused` runs the fused kernels wherever HS <= 128 (bf16 inputs rounded in the kernel),
// `batched_gemm` always the GEMMs. Degenerate shapes (HS == 0) always run the fused kernels. tf32() applies
// to the GEMMs only (the fused kernels multiply in float32).
//
// The mask: the policy type is turned, at compile time, into the POD cuda_detail::device_mask: the four
// known policies (bidirectional, causal{offset}, unimodal_mask{Q}, multimodal_causal_mask{Q}) are
// evaluated by formula in the kernels; any other policy is asked once per call on the host for its (T, S)
// table of allowed() bytes, which is uploaded to scratch and read by the kernels. Key padding is the
// optional (B, S) view; additive mask = (1 - keep) * -10000, keep = allowed ? padding : 0, as
// additive_mask() of core/mask_policy.hpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/mask_policy.hpp"
#include "blip2/models/qformer/masks.hpp"

namespace blip2 {
namespace cuda_detail {

// A mask policy as the kernels see it (passed by value).
struct device_mask {
  enum kind_t : int { bidirectional_k = 0, causal_k = 1, unimodal_k = 2, multimodal_causal_k = 3, table_k = 4 };
  int kind = bidirectional_k;
  index_t offset_or_queries = 0;        // causal: offset; unimodal / multimodal_causal: Q
  const unsigned char* table = nullptr;  // table_k: (T, S) row-major, 1 = allowed (device memory)
};

// The host table (rows * cols bytes) copied into the backend's scratch; returns the device copy, valid
// until the next attention call (src/cuda/attention_gemm.cu).
const unsigned char* upload_mask_table(cuda_backend& be, const unsigned char* host, std::size_t bytes);

// src/cuda/attention_fused.cu
void attention_forward_fused(cuda_backend& be, tensor_view<float, 3, cuda_space> out,
                             tensor_view<float, 4, cuda_space> probs, tensor_view<const float, 3, cuda_space> q,
                             tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                             index_t num_heads, device_mask mask, tensor_view<const float, 2, cuda_space> key_padding,
                             double dropout_p, std::uint64_t seed);
void attention_backward_fused(cuda_backend& be, tensor_view<float, 3, cuda_space> dq,
                              tensor_view<float, 3, cuda_space> dk, tensor_view<float, 3, cuda_space> dv,
                              tensor_view<const float, 3, cuda_space> dout, tensor_view<const float, 3, cuda_space> q,
                              tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                              tensor_view<const float, 4, cuda_space> probs, index_t num_heads, double dropout_p,
                              std::uint64_t seed, grad_write mode);
// src/cuda/attention_gemm.cu
void attention_forward_gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> out,
                            tensor_view<float, 4, cuda_space> probs, tensor_view<const float, 3, cuda_space> q,
                            tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                            index_t num_heads, device_mask mask, tensor_view<const float, 2, cuda_space> key_padding,
                            double dropout_p, std::uint64_t seed);
void attention_backward_gemm(cuda_backend& be, tensor_view<float, 3, cuda_space> dq,
                             tensor_view<float, 3, cuda_space> dk, tensor_view<float, 3, cuda_space> dv,
                             tensor_view<const float, 3, cuda_space> dout, tensor_view<const float, 3, cuda_space> q,
                             tensor_view<const float, 3, cuda_space> k, tensor_view<const float, 3, cuda_space> v,
                             tensor_view<const float, 4, cuda_space> probs, index_t num_heads, double dropout_p,
                             std::uint64_t seed, grad_write mode);

// The largest head size of the fused kernels.
inline constexpr index_t fused_attention_max_head_size = 128;

// Whether this call runs the fused kernels (see the top of this file).
inline bool attention_runs_fused(const cuda_backend& be, index_t head_size) {
  using k = cuda_backend::attention_kernels;
  if (head_size == 0) return true;
  if (head_size > fused_attention_max_head_size) return false;
  switch (be.attention()) {
    case k::fused: return true;
    case k::batched_gemm: return false;
    case k::automatic: break;
  }
  return be.matmul() == cuda_backend::matmul_precision::f32;
}

// The policy as a device_mask: a formula for the known policies (exact types only: a type derived from
// one of them may redefine allowed()), an uploaded (T, S) table for every other.
template <class Mask>
device_mask make_device_mask(cuda_backend& be, const Mask& mask, index_t T, index_t S) {
  device_mask m;
  if constexpr (std::is_same_v<Mask, bidirectional>) {
    m.kind = device_mask::bidirectional_k;
  } else if constexpr (std::is_same_v<Mask, causal>) {
    m.kind = device_mask::causal_k;
    m.offset_or_queries = mask.offset;
  } else if constexpr (std::is_same_v<Mask, unimodal_mask>) {
    m.kind = device_mask::unimodal_k;
    m.offset_or_queries = mask.num_queries;
  } else if constexpr (std::is_same_v<Mask, multimodal_causal_mask>) {
    m.kind = device_mask::multimodal_causal_k;
    m.offset_or_queries = mask.num_queries;
  } else {
    m.kind = device_mask::table_k;
    const std::size_t n = static_cast<std::size_t>(T) * static_cast<std::size_t>(S);
    std::vector<unsigned char> table(n);
    for (index_t t = 0; t < T; ++t)
      for (index_t s = 0; s < S; ++s)
        table[static_cast<std::size_t>(t * S + s)] = static_cast<bool>(mask.allowed(t, s)) ? 1 : 0;
    m.table = n ? upload_mask_table(be, table.data(), n) : nullptr;
  }
  return m;
}

}  // namespace cuda_detail

template <>
struct kernel<cuda_backend, op::attention_forward> {
  template <class T, class Mask>
  static void run(cuda_backend& be, tensor_view<T, 3, cuda_space> out, tensor_view<T, 4, cuda_space> probs,
                  tensor_view<const T, 3, cuda_space> q, tensor_view<const T, 3, cuda_space> k,
                  tensor_view<const T, 3, cuda_space> v, index_t num_heads, const Mask& mask,
                  tensor_view<const T, 2, cuda_space> key_padding, double dropout_p, std::uint64_t seed) {
    BLIP2_CUDA_FLOAT_ONLY(T, "attention_forward");
    if (out.size() == 0 && probs.size() == 0) return;  // B == 0 or T == 0: nothing to write
    const cuda_detail::device_mask m =
        probs.size() ? cuda_detail::make_device_mask(be, mask, q.extent(1), k.extent(1)) : cuda_detail::device_mask{};
    if (cuda_detail::attention_runs_fused(be, q.extent(2) / num_heads))
      cuda_detail::attention_forward_fused(be, out, probs, q, k, v, num_heads, m, key_padding, dropout_p, seed);
    else
      cuda_detail::attention_forward_gemm(be, out, probs, q, k, v, num_heads, m, key_padding, dropout_p, seed);
  }
};

template <>
struct kernel<cuda_backend, op::attention_backward> {
  // the mask and the padding only shifted the scores by constants: backward needs neither (as the reference)
  template <class T, class Mask>
  static void run(cuda_backend& be, tensor_view<T, 3, cuda_space> dq, tensor_view<T, 3, cuda_space> dk,
                  tensor_view<T, 3, cuda_space> dv, tensor_view<const T, 3, cuda_space> dout,
                  tensor_view<const T, 3, cuda_space> q, tensor_view<const T, 3, cuda_space> k,
                  tensor_view<const T, 3, cuda_space> v, tensor_view<const T, 4, cuda_space> probs, index_t num_heads,
                  const Mask&, tensor_view<const T, 2, cuda_space>, double dropout_p, std::uint64_t seed,
                  grad_write mode) {
    BLIP2_CUDA_FLOAT_ONLY(T, "attention_backward");
    if (dq.size() == 0 && dk.size() == 0 && dv.size() == 0) return;
    if (cuda_detail::attention_runs_fused(be, q.extent(2) / num_heads))
      cuda_detail::attention_backward_fused(be, dq, dk, dv, dout, q, k, v, probs, num_heads, dropout_p, seed, mode);
    else
      cuda_detail::attention_backward_gemm(be, dq, dk, dv, dout, q, k, v, probs, num_heads, dropout_p, seed, mode);
  }
};

}  // namespace blip2
