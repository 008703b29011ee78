// blip2/core/mask_policy.hpp: attention masks as policies, and the two generic ones.
//
// Dimensions: B batch, T query positions of an attention call (rows), S key positions (columns).
//
// A mask is a predicate over (row, col) = (query position, key position), plus an optional key padding
// (B, S) of floats, 1 = keep, 0 = pad. A fused attention kernel asks the predicate directly and never
// materialises a (T, S) tensor; materialize() builds the (B, T, S) additive mask for teaching and tests.
//
// Semantics are those of LAVIS / Hugging Face BERT: the mask is additive, (1 - m) * -10000, with
//     m(b, t, s) = policy.allowed(t, s) ? padding(b, s) : 0      (padding = 1 when there is none)
// which equals Hugging Face's extended mask (1 - causal * padding) * -10000: a key that is both
// disallowed and padded is pushed down by -10000 once, not twice. A fully masked row is therefore not
// -inf/NaN: every score is shifted by the same -10000, and softmax gives the weights of the unmasked
// scores (up to float rounding of score - 10000).
//
// The generic policies (a model's own ones live with the model: models/qformer/masks.hpp for BLIP-2):
//   bidirectional{}        everything allowed (encoders, ITC, ITM, every cross-attention)
//   causal{offset}         row t sees keys s <= t + offset; keys are `offset` cached keys, then the rows'
//                          own keys (S = offset + T). causal{} is plain causal self-attention; causal{Q}
//                          is ITG's text pass over the Q queries' cached K/V (text sees every query and
//                          the text up to itself), and a decoder step over a K/V cache of P positions.
#pragma once
#include <concepts>
#include <string_view>

#include "blip2/core/host_tensor.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// What an attention kernel needs from a mask: may query position `row` look at key position `col`?
template <class P>
concept mask_policy = requires(const P& p, index_t row, index_t col) {
  { p.allowed(row, col) } -> std::convertible_to<bool>;
};

// The additive value of a masked key (Hugging Face BERT: (1 - m) * -10000).
inline constexpr double masked_value = -10000.0;

struct bidirectional {
  static constexpr std::string_view name = "bidirectional";
  constexpr bool allowed(index_t, index_t) const { return true; }
  void check(index_t, index_t) const {}
};

struct causal {
  static constexpr std::string_view name = "causal";
  index_t offset = 0;  // keys before the rows' own: cached positions
  constexpr bool allowed(index_t row, index_t col) const { return col <= row + offset; }
  void check(index_t rows, index_t cols) const {
    BLIP2_CHECK(offset >= 0 && cols == offset + rows, shape_error,
                "causal: keys are `offset` cached keys then the T rows' own, so S = offset + T is needed; got "
                "offset = ",
                offset, ", T = ", rows, ", S = ", cols);
  }
};

// Pass as key padding when there is none (an empty tensor_view means the same).
struct no_padding_t {};
inline constexpr no_padding_t no_padding{};

// A policy's name for messages and test descriptions ("mask" for a user policy without one).
template <mask_policy P>
constexpr std::string_view mask_name(const P&) {
  if constexpr (requires { P::name; })
    return P::name;
  else
    return "mask";
}

// Check that a policy fits an attention call of T rows and S columns (policies without check() fit all).
template <mask_policy P>
void check_mask(const P& p, index_t rows, index_t cols) {
  if constexpr (requires { p.check(rows, cols); }) p.check(rows, cols);
}

// The additive mask value for batch b, row t, key s; padding is (B, S) or an empty view.
// The one place where policy and padding combine: every kernel calls this.
template <class T, mask_policy P, class Pad>
constexpr T additive_mask(const P& p, const tensor_view<const Pad, 2>& padding, index_t b, index_t t, index_t s) {
  const T keep = p.allowed(t, s) ? (padding.data() ? static_cast<T>(padding(b, s)) : T(1)) : T(0);
  return (T(1) - keep) * static_cast<T>(masked_value);
}

// The (B, T, S) additive mask of a policy and an optional (B, S) padding, for teaching and tests.
template <mask_policy P, class Pad>
host_tensor<float, 3> materialize(const P& p, const tensor_view<const Pad, 2>& padding, index_t B, index_t T,
                                  index_t S) {
  check_mask(p, T, S);
  if (padding.data())
    BLIP2_CHECK(padding.extents() == (extents_t<2>{B, S}), shape_error, "materialize: padding has shape ",
                shape_string(padding), " but ", shape_string<2>({B, S}), " was expected");
  host_tensor<float, 3> m({B, T, S});  // (B, T, S)
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < T; ++t)
      for (index_t s = 0; s < S; ++s) m(b, t, s) = additive_mask<float>(p, padding, b, t, s);
  return m;
}
template <mask_policy P, class Pad>
host_tensor<float, 3> materialize(const P& p, const tensor_view<Pad, 2>& padding, index_t B, index_t T, index_t S) {
  return materialize(p, tensor_view<const Pad, 2>(padding), B, T, S);
}
template <mask_policy P>
host_tensor<float, 3> materialize(const P& p, no_padding_t, index_t B, index_t T, index_t S) {
  return materialize(p, tensor_view<const float, 2>{}, B, T, S);
}

}  // namespace blip2
