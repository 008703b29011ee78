// blip2/generate/greedy_search.hpp: greedy decoding, Hugging Face's _greedy_search.
//
// B input rows, V vocabulary. Each step, for every row that has not produced its EOS: the logits (in
// double), the processors (repetition penalty, min new tokens), the first token of maximal score
// (torch.argmax's tie rule). A row that produced its EOS is fed pad_token_id from then on. Generation stops
// when every row has produced its EOS or after max_new_tokens steps; the model is not called after the
// last step. Per step: O(B V), no allocation.
//
// Returns B sequences (ids without the EOS; score = summed log-probability of the chosen tokens, EOS
// included, under log_softmax of the processed scores; see generated_sequence.hpp).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "blip2/generate/decoding_model.hpp"
#include "blip2/generate/generated_sequence.hpp"
#include "blip2/generate/generation_options.hpp"
#include "blip2/generate/logits_processors.hpp"

namespace blip2 {

template <decoding_model M>
std::vector<generated_sequence> greedy_search(M& model, const generation_options& options) {
  const char* who = "greedy_search";
  const auto V = static_cast<index_t>(model.vocab_size());
  const auto B = static_cast<index_t>(model.rows());
  options.validate(V);
  BLIP2_CHECK(!options.do_sample && options.num_beams == 1, value_error, who,
              ": the options ask for ", options.do_sample ? "sampling" : "beam search", "; call generate()");
  BLIP2_CHECK(B >= 1, value_error, who, ": the model holds no rows (prefill the prompt first)");
  const index_t T = options.max_new_tokens;
  const std::int32_t eos = options.eos_token_id;

  std::vector<generated_sequence> out(static_cast<std::size_t>(B));
  for (auto& s : out) s.ids.reserve(static_cast<std::size_t>(T));
  std::vector<double> row(static_cast<std::size_t>(V));          // (V) the scores of one row
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));   // (B) the tokens fed to the model
  logits_processors processors(options, V);
  index_t unfinished = B;

  for (index_t t = 0; t < T; ++t) {
    const tensor_view<const float, 2> logits = detail::generation_logits(model, B, who, t);  // (B, V)
    for (index_t b = 0; b < B; ++b) {
      generated_sequence& seq = out[static_cast<std::size_t>(b)];
      if (seq.ended_with_eos) {
        next[static_cast<std::size_t>(b)] = options.pad_token_id;
        continue;
      }
      detail::load_logits_row(logits, b, row, who, t);
      processors.process(row, seq.ids);
      std::size_t best = 0;  // the first maximum
      for (std::size_t v = 1; v < row.size(); ++v)
        if (row[v] > row[best]) best = v;
      next[static_cast<std::size_t>(b)] = detail::take_token(seq, row, static_cast<std::int32_t>(best), eos, unfinished);
    }
    if (unfinished == 0 || t + 1 == T) break;
    model.append(std::span<const std::int32_t>(next));
  }
  return out;
}

}  // namespace blip2
