// blip2/io/opt_checkpoint.hpp: an OPT decoder from a Hugging Face checkpoint: its configuration from a
// Blip2Config's "text_config" (or an OPTConfig), its weights by name from safetensors files.
//
// Names: <prefix>model.decoder.{embed_tokens, embed_positions, project_in, project_out, final_layer_norm,
// layers.N.*} and <prefix>lm_head.weight (prefix "language_model." inside BLIP-2, "" for an
// OPTForCausalLM file); models/opt/weights.hpp lists them. lm_head.weight is tied to embed_tokens unless
// tie_word_embeddings is false: a file may omit it (transformers does not save tied weights).
// float32 tensors are viewed in place in the memory-mapped files (a 10 GB decoder is neither read nor
// copied until it runs; the pages are the file's); other dtypes (F16, BF16, F64) or a double model are
// converted once into an owned arena. Errors (format_error / shape_error) name the file and the tensor:
// a missing tensor, another shape, a tensor under the prefix that the configuration has no parameter for,
// a text_config of another model type.
#pragma once
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "blip2/io/checkpoint_files.hpp"
#include "blip2/io/hf_config.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/opt/model.hpp"

namespace blip2 {

// OPTConfig fields from a JSON object (a Blip2Config's text_config). Absent fields keep OPTConfig's
// defaults; "model_type" must be "opt" when present.
inline opt_config parse_opt_config(const nlohmann::json& tc, std::string_view source = "<json>") {
  const std::string src(source);
  detail::config_fields f(tc, src, "text_config");
  if (!tc.is_object()) f.fail("text_config is ", detail::config_fields::describe(tc), ", expected a JSON object");
  std::string type = "opt";
  f.get("model_type", type);
  if (type != "opt")
    f.fail("text_config.model_type is \"", type, "\": only OPT language models (\"opt\") are supported so far");
  opt_config c;
  f.get("vocab_size", c.vocab_size);
  f.get("hidden_size", c.hidden_size);
  f.get("num_hidden_layers", c.num_hidden_layers);
  f.get("num_attention_heads", c.num_attention_heads);
  f.get("ffn_dim", c.ffn_dim);
  f.get("max_position_embeddings", c.max_position_embeddings);
  c.word_embed_proj_dim = c.hidden_size;  // OPTConfig: None -> hidden_size
  if (const auto* v = f.find("word_embed_proj_dim"); v && !v->is_null()) f.get("word_embed_proj_dim", c.word_embed_proj_dim);
  f.get("do_layer_norm_before", c.do_layer_norm_before);
  f.get("_remove_final_layer_norm", c.remove_final_layer_norm);
  f.get("enable_bias", c.enable_bias);
  f.get("layer_norm_elementwise_affine", c.layer_norm_elementwise_affine);
  f.get("activation_function", c.activation_function);
  f.get("dropout", c.dropout);
  f.get("attention_dropout", c.attention_dropout);
  f.get("bos_token_id", c.bos_token_id);
  f.get("eos_token_id", c.eos_token_id);
  f.get("pad_token_id", c.pad_token_id);
  f.get("tie_word_embeddings", c.tie_word_embeddings);
  check_opt_config(c, source);
  return c;
}

namespace detail {
inline const safetensors_file* holder_of(std::span<const safetensors_file> files, const std::string& name) {
  for (const auto& f : files)
    if (f.contains(name)) return &f;
  return nullptr;
}
}  // namespace detail

// The decoder of cfg from files (one file or a checkpoint's shards), tensors named under prefix.
template <class T = float>
opt_model<T> load_opt_model(const opt_config& cfg, std::shared_ptr<const std::vector<safetensors_file>> files,
                            const std::string& prefix = "language_model.") {
  BLIP2_CHECK(files && !files->empty(), value_error, "load_opt_model: no files");
  const std::span<const safetensors_file> fs(*files);
  const std::string label = fs.size() == 1 ? fs[0].label() : fs[0].label() + " (and its other shards)";
  opt_weights<T> shaped;
  detail::shape_opt_weights(cfg, shaped);
  // every parameter present with its shape; can all of them be viewed in place?
  bool in_place = std::is_same_v<T, float>;
  std::set<std::string> used;
  for_each_opt_parameter(
      cfg, shaped,
      [&](const std::string& name, auto& v) {
        const safetensors_file* file = detail::holder_of(fs, name);
        BLIP2_CHECK(file, format_error, "checkpoint '", label, "': missing tensor '", name, "' (expected shape ",
                    shape_string(v), ")");
        const auto& info = file->info(name);
        BLIP2_CHECK(detail::same_shape(info, v), shape_error, "checkpoint '", file->label(), "': tensor '", name, "' has shape ",
                    detail::vector_shape_string(info.shape), " but the OPT config needs ", shape_string(v),
                    name.find("embed_tokens") != std::string::npos ? " (text_config.vocab_size is the number of rows)" : "");
        in_place = in_place && info.dtype == safetensors_dtype::f32 &&
                   reinterpret_cast<std::uintptr_t>(file->bytes(name).data()) % alignof(float) == 0;
        used.insert(name);
      },
      prefix);
  const std::string head = prefix + "lm_head.weight";
  if (cfg.tie_word_embeddings)
    if (const auto* f = detail::holder_of(fs, head)) {  // saved although tied: it must at least fit
      const auto& info = f->info(head);
      BLIP2_CHECK(info.shape == std::vector<index_t>({cfg.vocab_size, cfg.word_embed_proj_dim}), shape_error,
                  "checkpoint '", f->label(), "': tensor '", head, "' has shape ", detail::vector_shape_string(info.shape),
                  " but the OPT config needs (", cfg.vocab_size, ", ", cfg.word_embed_proj_dim, ")");
      used.insert(head);
    }
  for (const auto& f : fs)
    for (const auto& name : f.names())
      BLIP2_CHECK(used.count(name) || name.rfind(prefix + "model.decoder.", 0) != 0, format_error, "checkpoint '",
                  f.label(), "': tensor '", name, "' belongs to the OPT decoder but this configuration (",
                  cfg.num_hidden_layers, " layers, do_layer_norm_before ", cfg.do_layer_norm_before ? "true" : "false",
                  ", word_embed_proj_dim ", cfg.word_embed_proj_dim, ") has no such parameter: config.json and the "
                  "weights disagree");
  if constexpr (std::is_same_v<T, float>) {
    if (in_place) {
      opt_weights<float> w = shaped;
      for_each_opt_parameter(
          cfg, w,
          [&](const std::string& name, auto& v) {
            constexpr std::size_t R = std::remove_cvref_t<decltype(v)>::rank;
            const auto src = detail::holder_of(fs, name)->template view_f32<R>(name);
            v = {const_cast<float*>(src.data()), v.extents()};  // read-only mapping: the frozen decoder only reads
          },
          prefix);
      w.lm_head = cfg.tie_word_embeddings ? w.embed_tokens : w.lm_head;
      return opt_model<float>(cfg, std::move(w), files);
    }
  }
  opt_model<T> m(cfg);
  for_each_opt_parameter(
      cfg, m.w, [&](const std::string& name, auto& v) { detail::holder_of(fs, name)->read_into(name, v); }, prefix);
  return m;
}

}  // namespace blip2
