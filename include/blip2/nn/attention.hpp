// blip2/nn/attention.hpp: multi-head scaled dot-product attention under a mask policy.
//
// Dimensions: B batch, T query positions, S key positions, C hidden (q, k, v already projected),
//             NH heads, HS = C / NH head size (head h uses channels [h HS, (h + 1) HS), the Hugging Face
//             BertSelfAttention layout).
//   forward:
//     scores(b, h, t, s) = q_h(b, t) . k_h(b, s) / sqrt(HS) + mask(b, t, s)    mask from core/mask_policy.hpp:
//                          (1 - m) * -10000, m = policy.allowed(t, s) ? key_padding(b, s) : 0
//     probs(b, h, t, :)  = softmax(scores(b, h, t, :))                         cached (before dropout)
//     dropped            = probs * keep / (1 - p)                              attention-probs dropout
//     out_h(b, t)        = sum_s dropped(b, h, t, s) v_h(b, s)                 heads concatenated: (B, T, C)
//   backward: dq, dk, dv assigned, or added with grad_write::accumulate (ITG adds into the gradients of
//             the queries' cached K/V). The mask is a constant.
// Dropout rule (the same as nn/dropout.hpp): element i of probs, i the row-major index into
// (B, NH, T, S), is kept iff uniform_float(seed, i) >= p, and kept elements are scaled by 1 / (1 - p);
// p must be in [0, 1), p == 0 is no dropout. Backward regenerates the mask from (seed, i).
// Kernels ask the mask policy element by element: no (T, S) mask is ever materialised.
#pragma once
#include <cstdint>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/mask_policy.hpp"

namespace blip2 {

// What backward needs from forward: the attention weights before dropout.
template <class T, class Space = host_space>
struct attention_cache {
  tensor_view<T, 4, Space> probs;  // (B, NH, T, S)
};

namespace detail {

// key_padding as a (B, S) view, or an empty one for no_padding.
template <class Be, class T, class Pad>
tensor_view<const T, 2, typename Be::memory_space> padding_arg(Pad&& pad) {
  if constexpr (std::is_same_v<std::remove_cvref_t<Pad>, no_padding_t>) {
    return {};
  } else {
    auto p = arg_view<Be, 2>(pad);
    static_assert(std::is_same_v<typename decltype(p)::value_type, T>,
                  "attention: key_padding must have the element type of q, k and v");
    return p;
  }
}

template <class Q, class K, class V, class P, class Pad, class Mask>
void check_attention(std::string_view op, const Q& q, const K& k, const V& v, const P& probs, const Pad& pad,
                     index_t num_heads, const Mask& mask, double dropout_p) {
  const index_t B = q.extent(0), T = q.extent(1), C = q.extent(2), S = k.extent(1);
  BLIP2_CHECK(num_heads > 0 && C % num_heads == 0, shape_error, op, ": C = ", C,
              " must be a positive multiple of num_heads = ", num_heads);
  check_shape(op, "k", k, {B, S, C});
  check_shape(op, "v", v, {B, S, C});
  check_shape(op, "cache.probs", probs, {B, num_heads, T, S});
  if (pad.data()) check_shape(op, "key_padding", pad, {B, S});
  check_mask(mask, T, S);
  BLIP2_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, value_error, op, ": dropout p = ", dropout_p,
              " must be in [0, 1)");
}

}  // namespace detail

// out = concat_h(dropout(softmax(q_h k_h^T / sqrt(HS) + mask)) v_h); cache.probs = the softmax
template <backend Be, tensor Out, class T, tensor Q, tensor K, tensor V, mask_policy Mask, class Pad>
void attention_forward(Be& be, Out&& out, attention_cache<T, typename Be::memory_space> cache, Q&& q, K&& k, V&& v,
                       index_t num_heads, const Mask& mask, Pad&& key_padding, double dropout_p = 0.0,
                       std::uint64_t seed = 0) {
  constexpr std::string_view op = "attention_forward";
  auto o = detail::arg_view<Be, 3>(out);                               // (B, T, C)
  auto qv = detail::as_const(detail::arg_view<Be, 3>(q));              // (B, T, C)
  auto kv = detail::as_const(detail::arg_view<Be, 3>(k));              // (B, S, C)
  auto vv = detail::as_const(detail::arg_view<Be, 3>(v));              // (B, S, C)
  auto pad = detail::padding_arg<Be, T>(key_padding);                  // (B, S) or empty
  static_assert(std::is_same_v<typename decltype(o)::element_type, T> &&
                    detail::same_value_type_v<decltype(o), decltype(qv)> &&
                    detail::same_value_type_v<decltype(o), decltype(kv)> &&
                    detail::same_value_type_v<decltype(o), decltype(vv)>,
                "attention_forward: out, cache, q, k and v must have the same element type");
  detail::check_attention(op, qv, kv, vv, cache.probs, pad, num_heads, mask, dropout_p);
  detail::check_shape(op, "out", o, qv.extents());
  BLIP2_DISPATCH(Be, attention_forward, be, o, cache.probs, qv, kv, vv, num_heads, mask, pad, dropout_p, seed);
}

// dq, dk, dv from dout through the cached probs (dropout regenerated from seed); assigned or accumulated
template <backend Be, tensor DQ, tensor DK, tensor DV, tensor DOut, tensor Q, tensor K, tensor V, class T,
          mask_policy Mask, class Pad>
void attention_backward(Be& be, DQ&& dq, DK&& dk, DV&& dv, DOut&& dout, Q&& q, K&& k, V&& v,
                        attention_cache<T, typename Be::memory_space> cache, index_t num_heads, const Mask& mask,
                        Pad&& key_padding, double dropout_p = 0.0, std::uint64_t seed = 0,
                        grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "attention_backward";
  auto dqv = detail::arg_view<Be, 3>(dq);                              // (B, T, C)
  auto dkv = detail::arg_view<Be, 3>(dk);                              // (B, S, C)
  auto dvv = detail::arg_view<Be, 3>(dv);                              // (B, S, C)
  auto dov = detail::as_const(detail::arg_view<Be, 3>(dout));          // (B, T, C)
  auto qv = detail::as_const(detail::arg_view<Be, 3>(q));              // (B, T, C)
  auto kv = detail::as_const(detail::arg_view<Be, 3>(k));              // (B, S, C)
  auto vv = detail::as_const(detail::arg_view<Be, 3>(v));              // (B, S, C)
  auto pad = detail::padding_arg<Be, T>(key_padding);                  // (B, S) or empty
  static_assert(std::is_same_v<typename decltype(dqv)::element_type, T> &&
                    detail::same_value_type_v<decltype(dqv), decltype(dkv)> &&
                    detail::same_value_type_v<decltype(dqv), decltype(dvv)> &&
                    detail::same_value_type_v<decltype(dqv), decltype(dov)> &&
                    detail::same_value_type_v<decltype(dqv), decltype(qv)> &&
                    detail::same_value_type_v<decltype(dqv), decltype(kv)> &&
                    detail::same_value_type_v<decltype(dqv), decltype(vv)>,
                "attention_backward: all tensors must have the same element type");
  detail::check_attention(op, qv, kv, vv, cache.probs, pad, num_heads, mask, dropout_p);
  detail::check_shape(op, "dq", dqv, qv.extents());
  detail::check_shape(op, "dk", dkv, kv.extents());
  detail::check_shape(op, "dv", dvv, vv.extents());
  detail::check_shape(op, "dout", dov, qv.extents());
  BLIP2_DISPATCH(Be, attention_backward, be, dqv, dkv, dvv, dov, qv, kv, vv, detail::as_const(cache.probs),
                 num_heads, mask, pad, dropout_p, seed, mode);
}

}  // namespace blip2
