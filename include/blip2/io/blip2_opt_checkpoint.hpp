// blip2/io/blip2_opt_checkpoint.hpp: BLIP-2 with OPT from a Hugging Face Blip2ForConditionalGeneration
// directory: config.json (text_config.model_type "opt"), model.safetensors or its shards
// (model.safetensors.index.json). The image encoder loads separately (io/vision_checkpoint.hpp), the
// tokenizer too (io/byte_bpe_tokenizer.hpp: vocab.json, merges.txt, tokenizer_config.json).
//
// Names: query_tokens and qformer.* (the query path: no text embeddings or text FFN),
// language_projection.{weight, bias}, language_model.* (io/opt_checkpoint.hpp). The Q-Former and the
// projection are copied (they train in stage 2); the float32 decoder is viewed in place in the mapped
// files. Errors name the file and the tensor (or config field) that is wrong.
// language_projection maps the Q-Former width to word_embed_proj_dim, the width the decoder embeds
// into: Hugging Face sizes it by text_config.hidden_size, which is the same number for every released
// BLIP-2 OPT and would not fit an opt-350m-shaped decoder (512-wide embeddings, 1024 hidden).
//
//   auto m = blip2::load_blip2_opt("blip2-opt-2.7b");   // float; load_blip2_opt<double> for an oracle
#pragma once
#include <filesystem>
#include <memory>
#include <vector>

#include "blip2/io/checkpoint_files.hpp"
#include "blip2/io/opt_checkpoint.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/models/blip2_opt/model.hpp"

namespace blip2 {

// The decoder's configuration from a Blip2 config.json (format_error for another text model).
inline opt_config load_blip2_opt_config(const std::filesystem::path& config_json) {
  const blip2_config cfg = load_blip2_config(config_json);
  return parse_opt_config(cfg.text_config, config_json.string());
}

template <class T = float>
blip2_opt_model<T> load_blip2_opt(const std::filesystem::path& dir) {
  const auto config_path = dir / "config.json";
  const blip2_config cfg = load_blip2_config(config_path);
  const opt_config oc = parse_opt_config(cfg.text_config, config_path.string());
  auto files = std::make_shared<const std::vector<safetensors_file>>(open_checkpoint_files(dir));
  const std::span<const safetensors_file> fs(*files);
  for (const auto& f : fs)
    BLIP2_CHECK(!f.contains("embeddings.word_embeddings.weight"), format_error, "checkpoint '", f.label(),
                "': has the Q-Former's text side (embeddings.word_embeddings.weight): a Blip2ForImageTextRetrieval "
                "checkpoint, not Blip2ForConditionalGeneration");
  qformer_model<T> qformer(to_model_config(cfg, false));
  load_qformer_weights(qformer, fs);
  const index_t C = cfg.qformer.hidden_size, Dw = oc.word_embed_proj_dim;
  language_projection<T> projection(C, Dw);
  for (const char* part : {"weight", "bias"}) {
    const std::string name = std::string("language_projection.") + part;
    const safetensors_file* file = detail::holder_of(fs, name);
    BLIP2_CHECK(file, format_error, "checkpoint '", fs[0].label(), "': missing tensor '", name, "' (expected shape ",
                part[0] == 'w' ? shape_string(projection.w.weight) : shape_string(projection.w.bias),
                ": text_config.word_embed_proj_dim x qformer_config.hidden_size)");
    if (part[0] == 'w')
      file->read_into(name, projection.w.weight);
    else
      file->read_into(name, projection.w.bias);
  }
  opt_model<T> llm = load_opt_model<T>(oc, files);
  return blip2_opt_model<T>{std::move(qformer), std::move(projection), std::move(llm)};
}

}  // namespace blip2
