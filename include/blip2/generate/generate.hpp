// blip2/generate/generate.hpp: text generation from a prefilled decoding model, as Hugging Face's generate().
//
//     model: any blip2::decoding_model (decoding_model.hpp), prefilled with the prompt: rows() == B
//     auto out = blip2::generate(model, blip2::lavis_caption_options(eos_newline, pad));
//     out[b * num_return_sequences + j]: ids (no prompt, no EOS), score, ended_with_eos
//
// It checks the options against the model and runs, as Hugging Face chooses its mode:
//   do_sample                  sample()         sampling.hpp: temperature, top-k, top-p, seeded Philox draws
//   num_beams == 1             greedy_search()  greedy_search.hpp
//   num_beams  > 1             beam_search()    beam_search.hpp: transformers >= 4.36 semantics
// with the logits processors of logits_processors.hpp (repetition penalty, min new tokens). Everything runs
// on the host in double, O(rows V) per step; the model's own step (select + append) is the real cost.
// The semantics, and the decisions Hugging Face leaves open (ties, precision), are those of
// tests/fixtures/hf_generation.py, the float64 reference the tests compare with.
#pragma once
#include <vector>

#include "blip2/generate/beam_search.hpp"
#include "blip2/generate/decoding_model.hpp"
#include "blip2/generate/generated_sequence.hpp"
#include "blip2/generate/generation_options.hpp"
#include "blip2/generate/greedy_search.hpp"
#include "blip2/generate/logits_processors.hpp"
#include "blip2/generate/sampling.hpp"

namespace blip2 {

template <decoding_model M>
std::vector<generated_sequence> generate(M& model, const generation_options& options) {
  options.validate(static_cast<index_t>(model.vocab_size()));
  if (options.do_sample) return sample(model, options);
  if (options.num_beams == 1) return greedy_search(model, options);
  return beam_search(model, options);
}

}  // namespace blip2
