// blip2/models/blip2_opt/generate_text.hpp: BLIP-2 OPT image-to-text generation (LAVIS Blip2OPT.generate,
// predict_answers): the soft prompt of each image, then the prompt's ids, prefilled into the decoder's
// KV cache once per image; then greedy, beam or sampled decoding (generate/generate.hpp), which expands
// the rows to K beams (or to several samples) through the session's select().
//
// Dimensions: B images, N image tokens, E image width, Q queries, P prompt ids, Dw decoder word width.
//   decoder input  [language_projection(Q-Former(image b)) ; embed_tokens(prompt ids)]   (Q + P) rows
//   mask           all ones: one prompt for every image, so there is no padding
//   result         out[b * num_return_sequences + j]: ids without the prompt and the EOS, the score
// prompt_ids are what the tokenizer gives for the prompt, BOS included (LAVIS: [</s>] + bpe(prompt);
// an empty prompt is [</s>]). With LAVIS's settings: generation_options from lavis_caption_options /
// lavis_vqa_options, eos = the id of "\n", pad = <pad>.
// Unlike Hugging Face, which repeats the inputs K times before the prefill, the prefill runs once per
// image and the cache is copied to the K beams: the same numbers for K times less prefill work.
#pragma once
#include <span>
#include <vector>

#include "blip2/generate/generate.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "blip2/models/opt/session.hpp"

namespace blip2 {

template <backend Be, class T, memory_space Space, class Img>
std::vector<generated_sequence> blip2_opt_generate(Be& be, const blip2_opt_model<T, Space>& m, Img&& image_embeds,
                                                   std::span<const index_t> prompt_ids,
                                                   const generation_options& options) {
  constexpr std::string_view op = "blip2_opt_generate";
  const auto& cfg = m.llm.config();
  const index_t P = static_cast<index_t>(prompt_ids.size()), Q = m.num_query_tokens(), Dw = cfg.word_embed_proj_dim;
  BLIP2_CHECK(P >= 1, value_error, op, ": no prompt ids (an empty prompt is [BOS])");
  for (index_t p = 0; p < P; ++p)
    BLIP2_CHECK(prompt_ids[static_cast<std::size_t>(p)] >= 0 && prompt_ids[static_cast<std::size_t>(p)] < cfg.vocab_size,
                value_error, op, ": prompt id ", prompt_ids[static_cast<std::size_t>(p)], " at ", p,
                " is outside the decoder's ", cfg.vocab_size, " embedding rows");
  options.validate(cfg.vocab_size);
  const auto img = detail::as_const(detail::arg_view<Be, 3>(image_embeds));  // (B, N, E)
  const index_t B = img.extent(0), L = Q + P;
  BLIP2_CHECK(B >= 1, shape_error, op, ": no images (image_embeds has shape ", shape_string(img), ")");
  // the last generated token is never fed back: L + max_new_tokens - 1 positions at most
  BLIP2_CHECK(L + options.max_new_tokens - 1 <= cfg.max_position_embeddings, value_error, op, ": ", Q, " queries + ", P,
              " prompt ids + max_new_tokens ", options.max_new_tokens, " - 1 = ", L + options.max_new_tokens - 1,
              " positions, but the decoder has max_position_embeddings = ", cfg.max_position_embeddings);
  buffer<T, Space> storage;
  tensor_view<T, 2, Space> embeds;
  lay_out(storage, [&](auto& a) { embeds = a.template take<2>({L * B, Dw}); });
  soft_prompt_state<T, Space> sp;
  soft_prompt_forward(be, m, sp, img, row_range(embeds, 0, Q * B));
  // the prompt's embeddings, the same ids for every image: row (Q + p) B + b
  index_list<Space> ids;
  ids.host.resize(static_cast<std::size_t>(P * B));
  for (index_t p = 0; p < P; ++p)
    for (index_t b = 0; b < B; ++b) ids.host[static_cast<std::size_t>(p * B + b)] = prompt_ids[static_cast<std::size_t>(p)];
  ids.upload(be);
  embedding_forward(be, row_range(embeds, Q * B, L * B), ids.view(), m.llm.w.embed_tokens);
  const std::vector<index_t> mask(static_cast<std::size_t>(B * L), 1);
  opt_session<Be, T> session(be, m.llm);
  session.start(detail::as_const(embeds), tensor_view<const index_t, 2>(mask.data(), {B, L}), options.max_new_tokens);
  return generate(session, options);
}

}  // namespace blip2
