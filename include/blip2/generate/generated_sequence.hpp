// blip2/generate/generated_sequence.hpp: what generation returns for one input row and returned sequence.
//
// Every algorithm returns a std::vector<generated_sequence> of B * num_return_sequences entries in
// Hugging Face's order: the num_return_sequences sequences of input row 0 (best first for beam search),
// then those of row 1, and so on.
#pragma once
#include <cstdint>
#include <vector>

namespace blip2 {

struct generated_sequence {
  // The generated ids: without the prompt (the model was prefilled with it) and without the EOS.
  std::vector<std::int32_t> ids;
  // Beam search: Hugging Face's sequence score, sum of the processed log-probabilities of the tokens
  // (EOS included) / len^length_penalty, len = generated tokens including the EOS (transformers >= 4.36).
  // Greedy search and sampling: the summed log-probability of the chosen tokens (EOS included) under the
  // distribution each was chosen from (log_softmax of the processed scores; for sampling after
  // temperature, top-k and top-p): Hugging Face's compute_transition_scores(normalize_logits=True), summed.
  double score = 0.0;
  // Whether the sequence ended with the EOS (false: it reached max_new_tokens, or there is no EOS id).
  bool ended_with_eos = false;
};

}  // namespace blip2
