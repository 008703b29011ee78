// blip2/generate/generation_options.hpp: the knobs of text generation, Hugging Face's names and meanings.
//
// Lengths count NEW tokens only (the prompt was prefilled; with LAVIS's inputs_embeds path Hugging Face's
// max_length/min_length mean the same from 4.27 until PR #28994, see shared STAGE2.md 2.1). Defaults are
// Hugging Face GenerationConfig's (max_length 20 = 20 new tokens in that path, greedy, top_k 50, top_p 1);
// lavis_caption_options / lavis_vqa_options give LAVIS's Blip2OPT settings.
//
// Which algorithm runs (generate.hpp), as in Hugging Face:
//   do_sample == false, num_beams == 1   greedy search          (num_return_sequences must be 1)
//   do_sample == false, num_beams  > 1   beam search            (num_return_sequences <= num_beams)
//   do_sample == true,  num_beams == 1   multinomial sampling   (top-k, top-p, temperature; seeded)
//   do_sample == true,  num_beams  > 1   beam-sample: not implemented (an error says so)
#pragma once
#include <cmath>
#include <cstdint>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

struct generation_options {
  index_t max_new_tokens = 20;        // stop after this many new tokens (>= 1)
  index_t min_new_tokens = 0;         // the EOS gets -inf while fewer new tokens were generated
  index_t num_beams = 1;              // 1: greedy search or sampling; > 1: beam search
  double length_penalty = 1.0;        // beam search: score = sum_logprob / len^length_penalty
  double repetition_penalty = 1.0;    // > 0; 1 = off; every distinct generated token: s*p if s < 0 else s/p
  bool do_sample = false;             // multinomial sampling instead of greedy search
  index_t top_k = 50;                 // sampling: keep the top_k largest scores (ties kept); 0 = off
  double top_p = 1.0;                 // sampling: nucleus mass in (0, 1]; 1 = off
  double temperature = 1.0;           // sampling: scores / temperature, > 0
  std::uint64_t seed = 0;             // sampling: Philox key (a draw is a function of (seed, step, row))
  index_t num_return_sequences = 1;   // sequences returned per input row
  std::int32_t eos_token_id = -1;     // one id (LAVIS: the id of "\n", 50118 for OPT); < 0: none
  std::int32_t pad_token_id = -1;     // fed to finished rows; needed when there is an EOS (OPT: 1)

  // Checks that need no model. Throws value_error naming the field, its value and the fix.
  void validate() const {
    const char* who = "generation_options";
    BLIP2_CHECK(max_new_tokens >= 1, value_error, who, ": max_new_tokens = ", max_new_tokens, " must be >= 1");
    BLIP2_CHECK(min_new_tokens >= 0 && min_new_tokens <= max_new_tokens, value_error, who, ": min_new_tokens = ",
                min_new_tokens, " must be in [0, max_new_tokens = ", max_new_tokens, "]");
    BLIP2_CHECK(num_beams >= 1, value_error, who, ": num_beams = ", num_beams, " must be >= 1");
    BLIP2_CHECK(num_return_sequences >= 1, value_error, who, ": num_return_sequences = ", num_return_sequences,
                " must be >= 1");
    BLIP2_CHECK(std::isfinite(length_penalty), value_error, who, ": length_penalty = ", length_penalty,
                " must be finite");
    BLIP2_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0, value_error, who,
                ": repetition_penalty = ", repetition_penalty, " must be > 0 (1 turns it off)");
    BLIP2_CHECK(std::isfinite(temperature) && temperature > 0, value_error, who, ": temperature = ", temperature,
                " must be > 0 (for greedy decoding set do_sample = false)");
    BLIP2_CHECK(top_p > 0 && top_p <= 1, value_error, who, ": top_p = ", top_p, " must be in (0, 1] (1 turns it off)");
    BLIP2_CHECK(top_k >= 0, value_error, who, ": top_k = ", top_k, " must be >= 0 (0 turns it off)");
    BLIP2_CHECK(!(do_sample && num_beams > 1), value_error, who, ": do_sample with num_beams = ", num_beams,
                " is Hugging Face's beam-sample, which is not implemented (LAVIS's use_nucleus_sampling with its"
                " default 5 beams runs it); set num_beams = 1 for nucleus sampling");
    BLIP2_CHECK(do_sample || num_beams > 1 || num_return_sequences == 1, value_error, who,
                ": num_return_sequences = ", num_return_sequences,
                " with greedy search (num_beams = 1, do_sample = false), which returns one sequence per row;"
                " use beam search (num_beams >= num_return_sequences) or sampling");
    BLIP2_CHECK(num_beams == 1 || num_return_sequences <= num_beams, value_error, who, ": num_return_sequences = ",
                num_return_sequences, " must be <= num_beams = ", num_beams);
    BLIP2_CHECK(eos_token_id < 0 || pad_token_id >= 0, value_error, who, ": eos_token_id = ", eos_token_id,
                " needs a pad_token_id >= 0 (the token fed to rows that have finished)");
  }

  // The above, and the token ids against the model's vocabulary.
  void validate(index_t vocab_size) const {
    validate();
    const char* who = "generation_options";
    BLIP2_CHECK(vocab_size >= 1, value_error, who, ": the model's vocab_size() = ", vocab_size, " must be >= 1");
    BLIP2_CHECK(eos_token_id < vocab_size, value_error, who, ": eos_token_id = ", eos_token_id,
                " is outside the vocabulary [0, ", vocab_size, ")");
    BLIP2_CHECK(pad_token_id < vocab_size, value_error, who, ": pad_token_id = ", pad_token_id,
                " is outside the vocabulary [0, ", vocab_size, ")");
    BLIP2_CHECK(num_beams == 1 || vocab_size >= 2, value_error, who,
                ": beam search needs a vocabulary of at least 2 tokens (2 * num_beams candidates), not ", vocab_size);
  }
};

// LAVIS Blip2OPT.generate's defaults (captioning): 5 beams, at most 30 new tokens, at least 1, length
// penalty 1, no repetition penalty. eos: the id of "\n" (50118 for OPT), pad: the tokenizer's (1).
// (LAVIS's COCO caption evaluation sets min_len 8; its use_nucleus_sampling also keeps the 5 beams, which
// is beam-sample: set num_beams = 1, do_sample = true, top_p = 0.9 for nucleus sampling.)
inline generation_options lavis_caption_options(std::int32_t eos_token_id, std::int32_t pad_token_id) {
  generation_options o;
  o.num_beams = 5;
  o.max_new_tokens = 30;
  o.min_new_tokens = 1;
  o.length_penalty = 1.0;
  o.eos_token_id = eos_token_id;
  o.pad_token_id = pad_token_id;
  return o;
}

// LAVIS Blip2OPT.predict_answers (VQA): 5 beams, at most 10 new tokens, at least 1, length penalty 0.
inline generation_options lavis_vqa_options(std::int32_t eos_token_id, std::int32_t pad_token_id) {
  generation_options o = lavis_caption_options(eos_token_id, pad_token_id);
  o.max_new_tokens = 10;
  o.length_penalty = 0.0;
  return o;
}

}  // namespace blip2
