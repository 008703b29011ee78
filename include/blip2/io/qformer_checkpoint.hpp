// blip2/io/qformer_checkpoint.hpp: a Q-Former from a Hugging Face BLIP-2 checkpoint directory, and back.
//
// A directory holds config.json (a Blip2Config) and model.safetensors. Parameters load by their Hugging
// Face names (models/qformer/weights.hpp lists them). The text side (word/position embeddings, text FFNs,
// text projection, ITM head) is loaded when the file has `embeddings.word_embeddings.weight`
// (Blip2ForImageTextRetrieval); without it (Blip2ForConditionalGeneration) the model has the image path
// only. The stage-1 heads (the ITG LM head cls.predictions.* and the ITC temperature `temp`) load when
// the file has `cls.predictions.transform.dense.weight` and `temp`; otherwise they are ignored.
// Tensors the Q-Former does not use (vision_model.*, language_model.*, ...) are ignored. A parameter that is missing or has another shape is a format_error / shape_error naming it.
#pragma once
#include <filesystem>
#include <set>
#include <span>
#include <string>

#include "blip2/io/hf_config.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/qformer/pass.hpp"

namespace blip2 {

namespace detail {
// Names that belong to the Q-Former: a tensor under one of them that the configuration does not use
// (a 12-layer file read with a 3-layer config.json) is refused rather than silently dropped.
inline bool qformer_owned_name(const std::string& n) {
  for (const char* p : {"qformer.", "embeddings.", "vision_projection.", "text_projection.", "itm_head."})
    if (n.rfind(p, 0) == 0) return true;
  if (n.size() >= 12 && n.compare(n.size() - 12, 12, "position_ids") == 0) return false;  // a buffer, not a parameter
  return n == "query_tokens";
}
}  // namespace detail

// Copy every parameter of m from the files (one file, or the shards of one checkpoint), by name.
template <class T>
void load_qformer_weights(qformer_model<T>& m, std::span<const safetensors_file> files) {
  BLIP2_CHECK(!files.empty(), value_error, "load_qformer_weights: no files");
  const std::string label = files.size() == 1 ? files[0].label() : files[0].label() + " (and its other shards)";
  std::set<std::string> used;
  for_each_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const safetensors_file* file = nullptr;
    for (const auto& f : files)
      if (!file && f.contains(name)) file = &f;
    BLIP2_CHECK(file, format_error, "checkpoint '", label, "': missing tensor '", name, "' (expected shape ",
                shape_string(v), ")");
    file->read_into(name, v);
    used.insert(name);
  });
  for (const auto& f : files)
    for (const auto& name : f.names())
      BLIP2_CHECK(used.count(name) || !detail::qformer_owned_name(name), format_error, "checkpoint '", f.label(),
                  "': tensor '", name, "' belongs to the Q-Former but this configuration (",
                  m.config().qformer.num_hidden_layers, " layers, cross_attention_frequency ",
                  m.config().qformer.cross_attention_frequency, ") has no such parameter: config.json and the "
                  "weights disagree");
}
template <class T>
void load_qformer_weights(qformer_model<T>& m, const safetensors_file& file) {
  load_qformer_weights(m, std::span<const safetensors_file>(&file, 1));
}

// The model of a checkpoint directory (config.json + model.safetensors).
template <class T = float>
qformer_model<T> load_qformer(const std::filesystem::path& dir) {
  const blip2_config cfg = load_blip2_config(dir / "config.json");
  const safetensors_file file = safetensors_file::open(dir / "model.safetensors");
  const bool with_text = file.contains("embeddings.word_embeddings.weight");
  qformer_model_config mc = to_model_config(cfg, with_text);
  mc.with_stage1_heads = with_text && file.contains("cls.predictions.transform.dense.weight") && file.contains("temp");
  qformer_model<T> m(mc);
  load_qformer_weights(m, file);
  return m;
}

// Every parameter (or, with prefix "grad.", every gradient) as safetensors entries borrowing the model's
// arenas; the model must outlive the entries.
template <class T>
std::vector<safetensors_entry> qformer_entries(qformer_model<T>& m, bool gradients = false, const std::string& prefix = "") {
  std::vector<safetensors_entry> out;
  auto& w = gradients ? m.g : m.w;
  for_each_parameter(m.config(), w, [&](const std::string& name, auto& v) {
    out.push_back(safetensors_entry::of(prefix + name, v));
  });
  return out;
}

}  // namespace blip2
