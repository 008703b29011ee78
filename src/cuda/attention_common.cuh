// src/cuda/attention_common.cuh: what the two attention implementations (attention_fused.cu,
// attention_gemm.cu) share on the device: the mask policy and key padding as the additive mask, the
// attention-probs dropout factor, bf16 rounding of product inputs.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "blip2/backend/cuda/attention.hpp"
#include "blip2/backend/reference/dropout.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {

// policy.allowed(t, s) of the policy that `m` describes (S: keys, the table's row length).
__device__ __forceinline__ bool mask_allows(const device_mask& m, index_t t, index_t s, index_t S) {
  const index_t x = m.offset_or_queries;
  switch (m.kind) {
    case device_mask::causal_k: return s <= t + x;
    case device_mask::unimodal_k: return (t < x) == (s < x);
    case device_mask::multimodal_causal_k: return s < x || (t >= x && s <= t);
    case device_mask::table_k: return m.table[t * S + s] != 0;
    default: return true;
  }
}

// additive_mask<float>(policy, padding, b, t, s): (1 - keep) * -10000, keep = allowed ? padding(b, s) : 0.
__device__ __forceinline__ float mask_value(const device_mask& m, const dview<const float, 2>& pad, index_t b,
                                            index_t t, index_t s, index_t S) {
  const float keep = mask_allows(m, t, s, S) ? (pad.p ? pad(b, s) : 1.0f) : 0.0f;
  return (1.0f - keep) * static_cast<float>(masked_value);
}

// The dropout factor of element i of probs (row-major in (B, NH, T, S)): 0 or scale = 1 / (1 - p);
// p == 0 keeps everything without drawing (reference attention_dropout_factor).
__device__ __forceinline__ float dropout_factor(double p, float scale, std::uint64_t seed, std::uint64_t i) {
  if (p == 0.0) return 1.0f;
  return blip2::dropout_keep(seed, i, p) ? scale : 0.0f;
}

// x rounded to bfloat16 (nearest even) when `round` says so: the inputs of a product in bf16 mode.
__device__ __forceinline__ float round_input(float x, bool round) {
  return round ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}

inline dview<const float, 2> padding_dview(const tensor_view<const float, 2, cuda_space>& pad) {
  dview<const float, 2> d = dv(pad);
  if (pad.size() == 0) d.p = nullptr;  // no padding: every key kept
  return d;
}

}  // namespace blip2::cuda_detail
