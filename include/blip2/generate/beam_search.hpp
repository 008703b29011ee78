// blip2/generate/beam_search.hpp: beam search, Hugging Face's _beam_search + BeamSearchScorer
// (transformers >= 4.36, early_stopping = False, one EOS id), as LAVIS's BLIP-2 captioning and VQA use it.
//
// B input rows, K = num_beams, R = B K beams (beam k of row b is row b K + k), V vocabulary, T =
// max_new_tokens, alpha = length_penalty. Step t = 0, 1, ... (t tokens generated so far):
//   1. Every beam of a row that is not done: lp = log_softmax(logits) in double, then the processors
//      (repetition penalty over the beam's own tokens, min new tokens) on lp.
//   2. Candidates beam_score[k] + lp[k][v] over the K V pairs; the best 2K, ranked by score descending,
//      then by flat index k V + v ascending (torch.topk leaves ties unspecified; this is our rule).
//      At t = 0 beam 0 scores 0 and the others -1e9, so the prompt row is expanded once.
//   3. Walk the candidates in rank order until K beams are filled: an EOS candidate ranked >= K is
//      dropped; one ranked < K finishes a hypothesis (the beam's tokens without the EOS, raw score = the
//      candidate's) with normalised score raw / (t + 1)^alpha, the length counting the EOS; any other
//      candidate becomes the next beam.
//   4. The row keeps its K best finished hypotheses (a new one enters a full set only when strictly
//      better than the worst; among equal worst scores the earliest added leaves). The row is done once
//      it holds K and worst >= best candidate of this step / (t + 1)^alpha (HF's cur_len = t + 1 in
//      the inputs_embeds path, where the decoder prompt length is 0). Done rows are fed pad_token_id.
//   5. Stop when every row is done or after T steps (the model is not called after the last step).
//      Then every open beam of a row not done is added with its raw score and its length (no EOS), and
//      the num_return_sequences best hypotheses are returned per row, best first (ties: the later added
//      first, as HF's stable sort and pop()).
// Precision: log_softmax, the processors and the beam scores in double (HF: the logits' dtype, float32
// upcast from ~4.38); tests/fixtures/hf_generation.py does the same in float64.
// Per step: O(R V) for the log-probabilities and the candidate scan (a bounded heap of 2K keeps it one
// comparison per candidate), O(R t) to reorder the beams' tokens, no allocation.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "blip2/generate/decoding_model.hpp"
#include "blip2/generate/generated_sequence.hpp"
#include "blip2/generate/generation_options.hpp"
#include "blip2/generate/logits_processors.hpp"

namespace blip2 {
namespace detail {

struct beam_candidate {
  double score;  // beam score + processed log-probability
  index_t flat;  // k V + v
};

// a ranks before b: a higher score, or the same score and a lower flat index
inline bool ranks_before(const beam_candidate& a, const beam_candidate& b) {
  return a.score > b.score || (a.score == b.score && a.flat < b.flat);
}

// The finished hypotheses of one input row (HF BeamHypotheses): at most K, each with its tokens in one of
// K + 1 preallocated slots of T tokens, kept in the order they were added.
class beam_hypotheses {
 public:
  struct entry {
    double score;        // normalised: sum_logprobs / len^alpha
    index_t length;      // ids (without EOS)
    index_t slot;        // where the ids are
    bool eos;
  };

  beam_hypotheses(index_t num_beams, double length_penalty, index_t max_tokens)
      : K_(num_beams), alpha_(length_penalty), T_(max_tokens),
        tokens_(static_cast<std::size_t>((num_beams + 1) * max_tokens)), free_(static_cast<std::size_t>(num_beams + 1)) {
    entries_.reserve(static_cast<std::size_t>(num_beams + 1));
    for (index_t s = 0; s <= num_beams; ++s) free_[static_cast<std::size_t>(s)] = num_beams - s;
  }

  // HF BeamHypotheses.add: generated_len counts the EOS for a finished beam, not for an open one.
  void add(std::span<const std::int32_t> ids, double sum_logprobs, index_t generated_len, bool eos) {
    const double score = sum_logprobs / std::pow(static_cast<double>(generated_len), alpha_);
    const auto n = static_cast<index_t>(entries_.size());
    if (!(n < K_ || score > worst_)) return;
    const index_t slot = free_.back();
    free_.pop_back();
    std::copy(ids.begin(), ids.end(), tokens_.begin() + slot * T_);
    entries_.push_back({score, static_cast<index_t>(ids.size()), slot, eos});
    if (n + 1 > K_) {
      // the lowest score leaves (the earliest added among equals); the worst is then the new lowest
      std::size_t lowest = 0;
      for (std::size_t i = 1; i < entries_.size(); ++i)
        if (entries_[i].score < entries_[lowest].score) lowest = i;
      free_.push_back(entries_[lowest].slot);
      entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(lowest));
      worst_ = entries_.front().score;
      for (const entry& e : entries_) worst_ = std::min(worst_, e.score);
    } else {
      worst_ = std::min(score, worst_);
    }
  }

  // HF BeamHypotheses.is_done with early_stopping=False.
  bool is_done(double best_sum_logprobs, index_t cur_len) const {
    if (static_cast<index_t>(entries_.size()) < K_) return false;
    return worst_ >= best_sum_logprobs / std::pow(static_cast<double>(cur_len), alpha_);
  }

  // The hypotheses best first; among equal scores the later added first (HF: stable sort, then pop()).
  std::vector<entry> ranked() const {
    std::vector<std::pair<entry, std::size_t>> order;
    for (std::size_t i = 0; i < entries_.size(); ++i) order.push_back({entries_[i], i});
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return a.first.score > b.first.score || (a.first.score == b.first.score && a.second > b.second);
    });
    std::vector<entry> out;
    for (const auto& e : order) out.push_back(e.first);
    return out;
  }

  std::span<const std::int32_t> ids(const entry& e) const {
    return {tokens_.data() + e.slot * T_, static_cast<std::size_t>(e.length)};
  }

 private:
  index_t K_;
  double alpha_;
  index_t T_;
  std::vector<std::int32_t> tokens_;  // (K + 1, T)
  std::vector<index_t> free_;         // free slots
  std::vector<entry> entries_;        // in the order added
  double worst_ = 1e9;                // HF's initial worst_score
};

}  // namespace detail

template <decoding_model M>
std::vector<generated_sequence> beam_search(M& model, const generation_options& options) {
  const char* who = "beam_search";
  const auto V = static_cast<index_t>(model.vocab_size());
  const auto B = static_cast<index_t>(model.rows());
  options.validate(V);
  BLIP2_CHECK(!options.do_sample && options.num_beams >= 2, value_error, who, ": needs num_beams >= 2 and do_sample = false",
              " (num_beams = ", options.num_beams, ", do_sample = ", options.do_sample,
              "); num_beams = 1 is greedy search: call generate()");
  BLIP2_CHECK(B >= 1, value_error, who, ": the model holds no rows (prefill the prompt first)");
  const index_t K = options.num_beams;
  const index_t R = B * K;
  const index_t T = options.max_new_tokens;
  const index_t C = 2 * K;  // candidates per row (one EOS id: HF's max(2, 1 + n_eos) K)
  const std::int32_t eos = options.eos_token_id;

  std::vector<double> beam_score(static_cast<std::size_t>(R), 0.0);  // (R)
  for (index_t i = 0; i < R; ++i)
    if (i % K != 0) beam_score[static_cast<std::size_t>(i)] = -1e9;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(R * T));       // (R, T) each beam's tokens
  std::vector<std::int32_t> next_tokens(static_cast<std::size_t>(R * T));  // (R, T) after the reorder
  std::vector<double> lp(static_cast<std::size_t>(K * V));                 // (K, V) one row's beams
  std::vector<detail::beam_candidate> top;                                 // (2K) a bounded heap
  top.reserve(static_cast<std::size_t>(C));
  std::vector<double> next_score(static_cast<std::size_t>(R));             // (R)
  std::vector<std::int32_t> next_token(static_cast<std::size_t>(R));       // (R) fed to the model
  std::vector<index_t> next_source(static_cast<std::size_t>(R));           // (R) beam each continues
  std::vector<index_t> model_source(static_cast<std::size_t>(R));          // (R) model row each continues
  std::vector<detail::beam_hypotheses> hyps(static_cast<std::size_t>(B),
                                            detail::beam_hypotheses(K, options.length_penalty, T));
  std::vector<char> done(static_cast<std::size_t>(B), 0);
  logits_processors processors(options, V);
  const auto worse_last = [](const detail::beam_candidate& a, const detail::beam_candidate& b) {
    return detail::ranks_before(a, b);  // heap order: the front is the candidate that ranks last
  };
  auto beam_tokens = [&](index_t i, index_t len) {
    return std::span<const std::int32_t>(tokens.data() + i * T, static_cast<std::size_t>(len));
  };

  index_t steps = 0;
  for (index_t t = 0; t < T; ++t) {
    const index_t cur_len = t + 1;  // HF: input_ids.shape[-1] + 1, the length the candidates reach
    // at step 0 the model still holds the B prompt rows; every beam of row b reads row b
    const tensor_view<const float, 2> logits = detail::generation_logits(model, t == 0 ? B : R, who, t);  // (B or R, V)
    for (index_t b = 0; b < B; ++b) {
      if (done[static_cast<std::size_t>(b)]) {  // fed pad; the score and the beams no longer matter
        for (index_t k = 0; k < K; ++k) {
          const auto i = static_cast<std::size_t>(b * K + k);
          next_score[i] = 0.0;
          next_token[i] = options.pad_token_id;
          next_source[i] = b * K + k;
        }
        continue;
      }
      // 1. processed log-probabilities of the K beams (at step 0 all K read the prompt row: once)
      const index_t distinct = t == 0 ? 1 : K;
      for (index_t k = 0; k < distinct; ++k) {
        std::span<double> row(lp.data() + k * V, static_cast<std::size_t>(V));
        detail::load_logits_row(logits, t == 0 ? b : b * K + k, row, who, t);
        log_softmax_in_place(row);
        processors.process(row, beam_tokens(b * K + k, t));
      }
      // 2. the best 2K of beam score + log-probability over the K V candidates
      top.clear();
      for (index_t k = 0; k < K; ++k) {
        const double* row = lp.data() + (t == 0 ? 0 : k) * V;
        const double base = beam_score[static_cast<std::size_t>(b * K + k)];
        for (index_t v = 0; v < V; ++v) {
          const detail::beam_candidate c{base + row[v], k * V + v};
          if (static_cast<index_t>(top.size()) < C) {
            top.push_back(c);
            std::push_heap(top.begin(), top.end(), worse_last);
          } else if (detail::ranks_before(c, top.front())) {
            std::pop_heap(top.begin(), top.end(), worse_last);
            top.back() = c;
            std::push_heap(top.begin(), top.end(), worse_last);
          }
        }
      }
      std::sort_heap(top.begin(), top.end(), worse_last);  // best first
      // 3. walk them in rank order
      index_t filled = 0;
      for (index_t rank = 0; rank < static_cast<index_t>(top.size()) && filled < K; ++rank) {
        const detail::beam_candidate& c = top[static_cast<std::size_t>(rank)];
        const index_t source = b * K + c.flat / V;
        const auto token = static_cast<std::int32_t>(c.flat % V);
        if (token == eos) {
          if (rank >= K) continue;  // an EOS outside the top K is dropped
          hyps[static_cast<std::size_t>(b)].add(beam_tokens(source, t), c.score, cur_len, true);
        } else {
          const auto i = static_cast<std::size_t>(b * K + filled);
          next_score[i] = c.score;
          next_token[i] = token;
          next_source[i] = source;
          ++filled;
        }
      }
      // 4. done when no candidate can beat the worst finished hypothesis (HF's heuristic)
      if (hyps[static_cast<std::size_t>(b)].is_done(top.front().score, cur_len)) done[static_cast<std::size_t>(b)] = 1;
    }
    // the new beams: their source's tokens, then the new token
    for (index_t i = 0; i < R; ++i) {
      const index_t s = next_source[static_cast<std::size_t>(i)];
      std::copy_n(tokens.begin() + s * T, t, next_tokens.begin() + i * T);
      next_tokens[static_cast<std::size_t>(i * T + t)] = next_token[static_cast<std::size_t>(i)];
    }
    std::swap(tokens, next_tokens);
    std::swap(beam_score, next_score);
    steps = t + 1;
    // 5. stop, or let the model follow: new row i continues the row its source beam read
    if (std::all_of(done.begin(), done.end(), [](char d) { return d != 0; }) || t + 1 == T) break;
    bool identity = t > 0;
    for (index_t i = 0; i < R; ++i) {
      const index_t s = next_source[static_cast<std::size_t>(i)];
      model_source[static_cast<std::size_t>(i)] = t == 0 ? s / K : s;
      identity = identity && s == i;
    }
    if (!identity) model.select(std::span<const index_t>(model_source));
    model.append(std::span<const std::int32_t>(next_token));
  }

  // finalize: the open beams of the rows not done, with their length and no EOS
  for (index_t b = 0; b < B; ++b) {
    if (done[static_cast<std::size_t>(b)]) continue;
    for (index_t k = 0; k < K; ++k)
      hyps[static_cast<std::size_t>(b)].add(beam_tokens(b * K + k, steps), beam_score[static_cast<std::size_t>(b * K + k)],
                                            steps, false);
  }
  std::vector<generated_sequence> out;
  out.reserve(static_cast<std::size_t>(B * options.num_return_sequences));
  for (index_t b = 0; b < B; ++b) {
    const auto& h = hyps[static_cast<std::size_t>(b)];
    const auto ranked = h.ranked();
    for (index_t j = 0; j < options.num_return_sequences; ++j) {
      const auto& e = ranked[static_cast<std::size_t>(j)];
      const auto ids = h.ids(e);
      out.push_back({std::vector<std::int32_t>(ids.begin(), ids.end()), e.score, e.eos});
    }
  }
  return out;
}

}  // namespace blip2
