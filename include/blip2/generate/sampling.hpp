// blip2/generate/sampling.hpp: multinomial (top-k / nucleus) sampling, Hugging Face's _sample.
//
// B input rows, n = num_return_sequences, R = B n sampled rows (row b's n copies are consecutive, as
// Hugging Face's repeat_interleave), V vocabulary. Each step, for every unfinished row: the logits (in
// double), the processors (repetition penalty, min new tokens), the warpers (temperature, top-k, top-p),
// then one draw from softmax of the result. Finished rows are fed pad_token_id; generation stops when
// every row has produced its EOS or after max_new_tokens steps. Per step: O(R V) plus the top-k selection
// and the top-p sort of the surviving tokens; no allocation.
//
// The draw (Hugging Face's torch.multinomial stream cannot be reproduced, so this one is ours):
//     u = uniform_double(seed, sampling_counter(step, row))     Philox-4x32-10, blip2/core/rng.hpp
//     token = the first id v, in id order, with sum_{w <= v} exp(s_w - max) > u * sum_w exp(s_w - max)
// so a result depends on (seed, step, row) and the scores only: not on threads, nor on the other rows.
// tests/fixtures/hf_generation.py implements the same stream, so the fixtures check it draw for draw.
//
// Returns R sequences (ids without the EOS; score = summed log-probability of the drawn tokens, EOS
// included, under the warped distribution they were drawn from).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "blip2/core/rng.hpp"
#include "blip2/generate/decoding_model.hpp"
#include "blip2/generate/generated_sequence.hpp"
#include "blip2/generate/generation_options.hpp"
#include "blip2/generate/logits_processors.hpp"

namespace blip2 {

// The Philox counter of the draw of `row` at `step`: step << 32 | row.
constexpr std::uint64_t sampling_counter(index_t step, index_t row) {
  return (static_cast<std::uint64_t>(step) << 32) | static_cast<std::uint64_t>(row);
}

// The token drawn from softmax(scores) by a uniform u in [0, 1): the first id whose cumulative
// unnormalised probability exceeds u times the total (tokens of probability 0 are never drawn).
inline std::int32_t draw_token(std::span<const double> scores, double u) {
  double m = -std::numeric_limits<double>::infinity();
  for (double x : scores) m = x > m ? x : m;
  double total = 0.0;
  for (double x : scores) total += std::exp(x - m);
  const double target = u * total;
  double acc = 0.0;
  std::int32_t last = 0;
  for (std::size_t v = 0; v < scores.size(); ++v) {
    const double e = std::exp(scores[v] - m);
    if (e == 0.0) continue;
    acc += e;
    last = static_cast<std::int32_t>(v);
    if (acc > target) return last;
  }
  return last;  // rounding left u * total beyond the sum: the last token that can be drawn
}

template <decoding_model M>
std::vector<generated_sequence> sample(M& model, const generation_options& options) {
  const char* who = "sample";
  const auto V = static_cast<index_t>(model.vocab_size());
  const auto B = static_cast<index_t>(model.rows());
  options.validate(V);
  BLIP2_CHECK(options.do_sample, value_error, who, ": the options do not ask for sampling (do_sample = false); call generate()");
  BLIP2_CHECK(B >= 1, value_error, who, ": the model holds no rows (prefill the prompt first)");
  const index_t n = options.num_return_sequences;
  const index_t R = B * n;
  const index_t T = options.max_new_tokens;
  BLIP2_CHECK(R < (index_t{1} << 32) && T < (index_t{1} << 31), value_error, who, ": ", R, " rows or ", T,
              " steps do not fit the sampling counter");
  const std::int32_t eos = options.eos_token_id;

  std::vector<generated_sequence> out(static_cast<std::size_t>(R));
  for (auto& s : out) s.ids.reserve(static_cast<std::size_t>(T));
  std::vector<double> row(static_cast<std::size_t>(V));          // (V) the scores of one row
  std::vector<std::int32_t> next(static_cast<std::size_t>(R));   // (R) the tokens fed to the model
  std::vector<index_t> expand(static_cast<std::size_t>(R));      // (R) prompt row of each sampled row
  for (index_t r = 0; r < R; ++r) expand[static_cast<std::size_t>(r)] = r / n;
  logits_processors processors(options, V);
  index_t unfinished = R;

  for (index_t t = 0; t < T; ++t) {
    // at step 0 the model still holds the B prompt rows: sampled row r reads prompt row r / n
    const tensor_view<const float, 2> logits = detail::generation_logits(model, t == 0 ? B : R, who, t);
    for (index_t r = 0; r < R; ++r) {
      generated_sequence& seq = out[static_cast<std::size_t>(r)];
      if (seq.ended_with_eos) {
        next[static_cast<std::size_t>(r)] = options.pad_token_id;
        continue;
      }
      detail::load_logits_row(logits, t == 0 ? r / n : r, row, who, t);
      processors.process(row, seq.ids);
      processors.warp(row);
      const std::int32_t token = draw_token(row, uniform_double(options.seed, sampling_counter(t, r)));
      next[static_cast<std::size_t>(r)] = detail::take_token(seq, row, token, eos, unfinished);
    }
    if (unfinished == 0 || t + 1 == T) break;
    if (t == 0 && n > 1) model.select(std::span<const index_t>(expand));
    model.append(std::span<const std::int32_t>(next));
  }
  return out;
}

}  // namespace blip2
