// blip2/backend/reference/attention.hpp: the fused attention kernels of the reference backend.
//
// Dimensions: B batch, NH heads, T query positions, S key positions, HS head size, C = NH HS.
// Arguments are checked by the public op (blip2::attention_*). The mask is asked element by element
// through additive_mask() (core/mask_policy.hpp); nothing of size (T, S) is made besides the probs cache.
// Backward keeps no (T, S) scratch either: it recomputes dprobs for each query row in two passes.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "blip2/backend/reference/dropout.hpp"
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/mask_policy.hpp"

namespace blip2 {
namespace detail {

// (B, T, C) seen as (B, NH, T, HS): head h is channels [h HS, (h + 1) HS), no copy.
template <class T, class S>
tensor_view<T, 4, S> head_view(const tensor_view<T, 3, S>& x, index_t num_heads) {
  const index_t HS = x.extent(2) / num_heads;
  return {x.data(), {x.extent(0), num_heads, x.extent(1), HS},
          {x.stride(0), HS * x.stride(2), x.stride(1), x.stride(2)}};
}

// The attention-probs dropout of element i (row-major index into (B, NH, T, S)): the factor it is
// multiplied by, 0 (dropped) or 1 / (1 - p) (kept). The rule is the dropout op's, dropout_keep() and
// dropout_scale() of reference/dropout.hpp; p == 0 keeps everything without drawing.
template <class T>
T attention_dropout_factor(std::uint64_t seed, std::uint64_t i, double p) {
  if (p == 0.0) return T(1);
  return dropout_keep(seed, i, p) ? dropout_scale<T>(p) : T(0);
}

}  // namespace detail

template <>
struct kernel<reference_backend, op::attention_forward> {
  template <class T, class Mask>
  static void run(reference_backend&, tensor_view<T, 3> out, tensor_view<T, 4> probs, tensor_view<const T, 3> q,
                  tensor_view<const T, 3> k, tensor_view<const T, 3> v, index_t num_heads, const Mask& mask,
                  tensor_view<const T, 2> key_padding, double dropout_p, std::uint64_t seed) {
    const index_t B = q.extent(0), T_ = q.extent(1), S = k.extent(1), NH = num_heads;
    const index_t HS = q.extent(2) / NH;
    const auto qh = detail::head_view(q, NH);    // (B, NH, T, HS)
    const auto kh = detail::head_view(k, NH);    // (B, NH, S, HS)
    const auto vh = detail::head_view(v, NH);    // (B, NH, S, HS)
    const auto oh = detail::head_view(out, NH);  // (B, NH, T, HS)
    const T scale = T(1) / std::sqrt(static_cast<T>(HS));
    // one query row (b, h, t) per iteration: its probs row and its out channels belong to it alone
    BLIP2_OMP_FOR
    for (index_t row = 0; row < B * NH * T_; ++row) {
      const index_t b = row / (NH * T_), h = (row / T_) % NH, t = row % T_;
      // scores = q . k / sqrt(HS) + mask, kept in the probs row; then its maximum
      T mx = -std::numeric_limits<T>::infinity();
      for (index_t s = 0; s < S; ++s) {
        T dot = 0;
        for (index_t c = 0; c < HS; ++c) dot += qh(b, h, t, c) * kh(b, h, s, c);
        const T score = dot * scale + additive_mask<T>(mask, key_padding, b, t, s);
        probs(b, h, t, s) = score;
        mx = score > mx ? score : mx;
      }
      // probs = softmax(scores), stable
      T sum = 0;
      for (index_t s = 0; s < S; ++s) {
        const T e = std::exp(probs(b, h, t, s) - mx);
        probs(b, h, t, s) = e;
        sum += e;
      }
      const T inv = T(1) / sum;
      for (index_t s = 0; s < S; ++s) probs(b, h, t, s) *= inv;
      // out = dropout(probs) v
      for (index_t c = 0; c < HS; ++c) oh(b, h, t, c) = 0;
      for (index_t s = 0; s < S; ++s) {
        const auto i = static_cast<std::uint64_t>(row * S + s);  // ((b NH + h) T + t) S + s
        const T p = probs(b, h, t, s) * detail::attention_dropout_factor<T>(seed, i, dropout_p);
        for (index_t c = 0; c < HS; ++c) oh(b, h, t, c) += p * vh(b, h, s, c);
      }
    }
  }
};

template <>
struct kernel<reference_backend, op::attention_backward> {
  template <class T, class Mask>
  static void run(reference_backend&, tensor_view<T, 3> dq, tensor_view<T, 3> dk, tensor_view<T, 3> dv,
                  tensor_view<const T, 3> dout, tensor_view<const T, 3> q, tensor_view<const T, 3> k,
                  tensor_view<const T, 3> v, tensor_view<const T, 4> probs, index_t num_heads, const Mask&,
                  tensor_view<const T, 2>, double dropout_p, std::uint64_t seed, grad_write mode) {
    // the mask and the padding only shifted the scores by constants: backward needs neither
    const index_t B = q.extent(0), T_ = q.extent(1), S = k.extent(1), NH = num_heads;
    const index_t HS = q.extent(2) / NH;
    const auto qh = detail::head_view(q, NH), doh = detail::head_view(dout, NH);  // (B, NH, T, HS)
    const auto kh = detail::head_view(k, NH), vh = detail::head_view(v, NH);      // (B, NH, S, HS)
    const auto dqh = detail::head_view(dq, NH);                                   // (B, NH, T, HS)
    const auto dkh = detail::head_view(dk, NH), dvh = detail::head_view(dv, NH);  // (B, NH, S, HS)
    const T scale = T(1) / std::sqrt(static_cast<T>(HS));
    // one (b, h) per iteration: dq, dk, dv of head h of batch b are its channels alone
    BLIP2_OMP_FOR_COLLAPSE2
    for (index_t b = 0; b < B; ++b) {
      for (index_t h = 0; h < NH; ++h) {
        if (mode == grad_write::assign) {
          for (index_t t = 0; t < T_; ++t)
            for (index_t c = 0; c < HS; ++c) dqh(b, h, t, c) = 0;
          for (index_t s = 0; s < S; ++s)
            for (index_t c = 0; c < HS; ++c) dkh(b, h, s, c) = dvh(b, h, s, c) = 0;
        }
        for (index_t t = 0; t < T_; ++t) {
          const index_t row = (b * NH + h) * T_ + t;
          // dropped(s) = probs(s) f(s), f the dropout factor; dprobs(s) = f(s) dout . v(s)
          auto factor = [&](index_t s) {
            return detail::attention_dropout_factor<T>(seed, static_cast<std::uint64_t>(row * S + s), dropout_p);
          };
          auto dprobs = [&](index_t s, T f) {
            T acc = 0;
            for (index_t c = 0; c < HS; ++c) acc += doh(b, h, t, c) * vh(b, h, s, c);
            return acc * f;
          };
          // forward: out(t) = sum_s dropped(t, s) v(s)
          //   dv(s) += dropped(t, s) dout(t);  ddropped(t, s) = dout(t) . v(s);  dprobs = ddropped f
          // forward: probs = softmax(scores)
          //   dscores(s) = probs(s) (dprobs(s) - sum_j probs(j) dprobs(j))
          T dot = 0;
          for (index_t s = 0; s < S; ++s) {
            const T f = factor(s);
            const T dropped = probs(b, h, t, s) * f;
            for (index_t c = 0; c < HS; ++c) dvh(b, h, s, c) += dropped * doh(b, h, t, c);
            dot += probs(b, h, t, s) * dprobs(s, f);
          }
          // forward: scores(t, s) = q(t) . k(s) / sqrt(HS) + mask(t, s)
          //   dq(t) += dscores(s) k(s) / sqrt(HS);  dk(s) += dscores(s) q(t) / sqrt(HS)
          for (index_t s = 0; s < S; ++s) {
            const T ds = probs(b, h, t, s) * (dprobs(s, factor(s)) - dot) * scale;
            for (index_t c = 0; c < HS; ++c) {
              dqh(b, h, t, c) += ds * kh(b, h, s, c);
              dkh(b, h, s, c) += ds * qh(b, h, t, c);
            }
          }
        }
      }
    }
  }
};

}  // namespace blip2
