// blip2/generate/logits_processors.hpp: Hugging Face's logits processors and warpers, on one row of scores.
//
// V = vocabulary size. A row of scores is a std::span<double> of V entries, changed in place; -inf marks a
// token that cannot be chosen. Hugging Face (generation/logits_process.py) applies, in this order:
//   processors (every algorithm): repetition penalty, then min new tokens;
//   warpers (sampling only):      temperature, then top-k, then top-p.
// Beam search applies the processors to the log-probabilities (log_softmax of the logits), greedy search
// and sampling to the logits themselves; generation works in double from the model's float logits.
//
// "Generated" ids are the row's new tokens only: with LAVIS's inputs_embeds path Hugging Face's input_ids
// holds no prompt, so the prompt is never repetition-penalised and lengths count new tokens.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

#include "blip2/generate/generated_sequence.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/generate/generation_options.hpp"

namespace blip2 {

// ---- row helpers ----

// s_v <- (s_v - m) - log(sum_u exp(s_u - m)), m = max: log_softmax in double, the sum in index order
// (tests/fixtures/hf_generation.py uses the same formula). The row must have a finite maximum.
inline void log_softmax_in_place(std::span<double> s) {
  double m = -std::numeric_limits<double>::infinity();
  for (double x : s) m = x > m ? x : m;
  double total = 0.0;
  for (double x : s) total += std::exp(x - m);
  const double lse = std::log(total);
  for (double& x : s) x = (x - m) - lse;
}

// log_softmax(s)[token] with the same formula, without changing s.
inline double log_probability(std::span<const double> s, std::int32_t token) {
  double m = -std::numeric_limits<double>::infinity();
  for (double x : s) m = x > m ? x : m;
  double total = 0.0;
  for (double x : s) total += std::exp(x - m);
  return (s[static_cast<std::size_t>(token)] - m) - std::log(total);
}

namespace detail {
// One row's chosen token (greedy search, sampling): its log-probability under the row's processed scores
// joins the score; the EOS ends the sequence (and is not kept), any other token is appended. Returns the
// token to feed back.
inline std::int32_t take_token(generated_sequence& seq, std::span<const double> row, std::int32_t token,
                               std::int32_t eos, index_t& unfinished) {
  seq.score += log_probability(row, token);
  if (token == eos) {
    seq.ended_with_eos = true;
    --unfinished;
  } else {
    seq.ids.push_back(token);
  }
  return token;
}
}  // namespace detail

// ---- processors ----

// RepetitionPenaltyLogitsProcessor: every distinct generated token's score s becomes s * penalty if s < 0,
// s / penalty otherwise. As Hugging Face does it: gather the scores of all generated ids first, then
// write the penalised values back, so a repeated id is penalised once. gathered: >= generated.size().
inline void apply_repetition_penalty(std::span<double> scores, std::span<const std::int32_t> generated,
                                     double penalty, std::span<double> gathered) {
  for (std::size_t i = 0; i < generated.size(); ++i) gathered[i] = scores[static_cast<std::size_t>(generated[i])];
  for (std::size_t i = 0; i < generated.size(); ++i) {
    const double s = gathered[i];
    scores[static_cast<std::size_t>(generated[i])] = s < 0 ? s * penalty : s / penalty;
  }
}

// MinNewTokensLengthLogitsProcessor (= MinLength when input_ids holds new tokens only): the EOS cannot be
// chosen while fewer than min_new_tokens tokens were generated. eos < 0: nothing to do.
inline void apply_min_new_tokens(std::span<double> scores, index_t generated_count, index_t min_new_tokens,
                                 std::int32_t eos) {
  if (eos >= 0 && generated_count < min_new_tokens)
    scores[static_cast<std::size_t>(eos)] = -std::numeric_limits<double>::infinity();
}

// ---- warpers (sampling) ----

// TemperatureLogitsWarper: s / temperature.
inline void apply_temperature(std::span<double> scores, double temperature) {
  for (double& s : scores) s /= temperature;
}

// TopKLogitsWarper (min_tokens_to_keep 1): every score below the k-th largest becomes -inf (ties with the
// k-th are kept). k is clamped to [1, V]. scratch: >= V doubles.
inline void apply_top_k(std::span<double> scores, index_t k, std::span<double> scratch) {
  const auto V = static_cast<index_t>(scores.size());
  k = std::clamp<index_t>(k, 1, V);
  if (k == V) return;
  std::copy(scores.begin(), scores.end(), scratch.begin());
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.begin() + V, std::greater<double>());
  const double kth = scratch[static_cast<std::size_t>(k - 1)];
  for (double& s : scores)
    if (s < kth) s = -std::numeric_limits<double>::infinity();
}

struct scored_token {
  double score;
  std::int32_t id;
};

// TopPLogitsWarper (min_tokens_to_keep 1): sort ascending, cumulative softmax, drop the tokens whose
// cumulative probability is <= 1 - top_p; the largest is always kept. Ties are sorted by token id
// (torch.sort leaves them unspecified). Only the finite scores are sorted: a -inf token has probability 0
// and stays -inf, so the result is the same as sorting all V. top_p >= 1: nothing to do (Hugging Face does
// not add the warper). scratch: >= V entries.
inline void apply_top_p(std::span<double> scores, double top_p, std::span<scored_token> scratch) {
  if (top_p >= 1.0) return;
  std::size_t n = 0;
  for (std::size_t v = 0; v < scores.size(); ++v)
    if (scores[v] > -std::numeric_limits<double>::infinity())
      scratch[n++] = {scores[v], static_cast<std::int32_t>(v)};
  if (n == 0) return;
  std::sort(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(n),
            [](const scored_token& a, const scored_token& b) { return a.score < b.score || (a.score == b.score && a.id < b.id); });
  const double m = scratch[n - 1].score;
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    scratch[i].score = std::exp(scratch[i].score - m);  // from here on: the unnormalised probability
    total += scratch[i].score;
  }
  double cumulative = 0.0;
  for (std::size_t i = 0; i + 1 < n; ++i) {
    cumulative += scratch[i].score / total;
    if (cumulative <= 1.0 - top_p) scores[static_cast<std::size_t>(scratch[i].id)] = -std::numeric_limits<double>::infinity();
  }
}

// ---- all of them, as the options ask, with their scratch allocated once ----
class logits_processors {
 public:
  logits_processors(const generation_options& options, index_t vocab_size) : o_(options) {
    if (o_.repetition_penalty != 1.0) gathered_.resize(static_cast<std::size_t>(o_.max_new_tokens));
    if (o_.do_sample && o_.top_k > 0 && o_.top_k < vocab_size) top_k_scratch_.resize(static_cast<std::size_t>(vocab_size));
    if (o_.do_sample && o_.top_p < 1.0) top_p_scratch_.resize(static_cast<std::size_t>(vocab_size));
  }

  // Repetition penalty (if != 1), then min new tokens: Hugging Face's order. generated: the row's new
  // tokens so far (its length is the number generated).
  void process(std::span<double> scores, std::span<const std::int32_t> generated) {
    if (o_.repetition_penalty != 1.0) apply_repetition_penalty(scores, generated, o_.repetition_penalty, gathered_);
    apply_min_new_tokens(scores, static_cast<index_t>(generated.size()), o_.min_new_tokens, o_.eos_token_id);
  }

  // Temperature (if != 1), top-k (if > 0), top-p (if < 1): Hugging Face's _get_logits_warper order.
  void warp(std::span<double> scores) {
    if (o_.temperature != 1.0) apply_temperature(scores, o_.temperature);
    if (o_.top_k > 0 && o_.top_k < static_cast<index_t>(scores.size())) apply_top_k(scores, o_.top_k, top_k_scratch_);
    if (o_.top_p < 1.0) apply_top_p(scores, o_.top_p, top_p_scratch_);
  }

 private:
  generation_options o_;
  std::vector<double> gathered_;
  std::vector<double> top_k_scratch_;
  std::vector<scored_token> top_p_scratch_;
};

}  // namespace blip2
