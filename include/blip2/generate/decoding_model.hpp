// blip2/generate/decoding_model.hpp: what text generation needs from a model (the OPT decoder, a toy).
//
// Dimension legend: B input rows (batch), R rows the model holds (B, B * num_beams or
// B * num_return_sequences), V vocabulary rows of the logits.
//
// A decoding model holds R sequences, each with its KV cache (or whatever state it keeps), and the
// next-token logits of each. Generation never sees tensors of the model's backend: logits() is a host
// view (the model copies its last logits row per sequence to the host), and ids travel as host spans.
//   - At entry the caller has prefilled the prompt: rows() == B and logits() holds the first next-token
//     logits, (B, V).
//   - select(rows): new row i continues old row rows[i]; rows.size() becomes rows(). Generation calls it
//     to expand the B prompt rows (beams, num_return_sequences) and to reorder after a beam step; the
//     expansion is folded into the first reorder, so a model copies its state once per step at most.
//     Greedy search never calls it.
//   - append(tokens): one token per row (tokens.size() == rows()); afterwards logits() holds the logits
//     that follow. Generation calls it only when another token is needed: never after the last step.
#pragma once
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <class M>
concept decoding_model = requires(M& m, const M& cm, std::span<const std::int32_t> tokens, std::span<const index_t> rows) {
  { cm.vocab_size() } -> std::convertible_to<index_t>;
  { cm.rows() } -> std::convertible_to<index_t>;          // sequences currently held
  { cm.logits() } -> std::convertible_to<tensor_view<const float, 2>>;  // (rows(), V) host: next-token logits of each row
  m.select(rows);    // new row i continues old row rows[i]; rows.size() becomes rows() (expansion for beams / num_return_sequences, reordering after a beam step)
  m.append(tokens);  // one token per row (tokens.size() == rows()); afterwards logits() holds the next logits
};

namespace detail {

// The model's logits at step t, checked: (rows, V) with V = vocab_size().
template <decoding_model M>
tensor_view<const float, 2> generation_logits(const M& model, index_t rows, std::string_view who, index_t t) {
  const tensor_view<const float, 2> logits = model.logits();
  const extents_t<2> expected{rows, static_cast<index_t>(model.vocab_size())};
  BLIP2_CHECK(logits.extents() == expected, shape_error, who, ": at step ", t, " the model's logits() has shape ",
              shape_string(logits), " but ", shape_string<2>(expected), " was expected (rows(), vocab_size())");
  return logits;
}

// Row r of the logits as double into out (size V). NaN or +inf, or a row that is all -inf, is an error:
// it would make every later choice meaningless. -inf entries are allowed (masked tokens).
inline void load_logits_row(const tensor_view<const float, 2>& logits, index_t r, std::span<double> out,
                            std::string_view who, index_t t) {
  const float* p = logits.data() + r * logits.stride(0);
  const index_t s = logits.stride(1);
  double m = -std::numeric_limits<double>::infinity();
  for (std::size_t v = 0; v < out.size(); ++v) {
    const double x = static_cast<double>(p[static_cast<index_t>(v) * s]);
    BLIP2_CHECK(!std::isnan(x) && x != std::numeric_limits<double>::infinity(), value_error, who,
                ": the model's logit of token ", v, " in row ", r, " at step ", t, " is ", x);
    out[v] = x;
    m = x > m ? x : m;
  }
  BLIP2_CHECK(m > -std::numeric_limits<double>::infinity(), value_error, who, ": every logit of row ", r,
              " at step ", t, " is -inf");
}

}  // namespace detail
}  // namespace blip2
