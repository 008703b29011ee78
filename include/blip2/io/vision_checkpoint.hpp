// blip2/io/vision_checkpoint.hpp: the frozen image encoder from a Hugging Face BLIP-2 checkpoint directory.
//
// A directory holds config.json (a Blip2Config: its "vision_config" gives the sizes, EVA ViT-g/14's when
// absent) and model.safetensors, or, as the released Salesforce/blip2-* repositories have it, shards
// listed by model.safetensors.index.json ({"weight_map": {tensor name: shard file name}}). Parameters
// load by their Hugging Face names (models/vit/vision_transformer.hpp lists them, all under "vision_model."),
// converted from F32/F16/BF16/F64. Errors name what is wrong:
//   - a missing tensor: format_error with its name and the expected shape;
//   - a tensor of another shape: shape_error with its name, its shape and the expected one;
//   - a "vision_model." tensor that this configuration has no parameter for (a 39-layer file read with a
//     2-layer config.json, a qkv.bias when qkv_bias is false): format_error, config and weights disagree.
// Tensors outside "vision_model." (the Q-Former, the language model) are ignored.
//
//   auto vit = blip2::load_vision_model("blip2-opt-2.7b");   // float; load_vision_model<double> for the oracle
#pragma once
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "blip2/io/checkpoint_files.hpp"
#include "blip2/io/hf_config.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/vit/vision_transformer.hpp"

namespace blip2 {

// Copy every parameter of m from the files (one file, or the shards of one checkpoint), by name.
template <class T>
void load_vision_weights(vision_model<T>& m, std::span<const safetensors_file> files) {
  BLIP2_CHECK(!files.empty(), value_error, "load_vision_weights: no files");
  const std::string label = files.size() == 1 ? files[0].label() : files[0].label() + " (and its other shards)";
  auto holder = [&](const std::string& name) -> const safetensors_file* {
    for (const auto& f : files)
      if (f.contains(name)) return &f;
    return nullptr;
  };
  std::set<std::string> used;
  for_each_vision_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const safetensors_file* file = holder(name);
    BLIP2_CHECK(file, format_error, "checkpoint '", label, "': missing tensor '", name, "' (expected shape ",
                shape_string(v), ")");
    const auto& info = file->info(name);
    BLIP2_CHECK(detail::same_shape(info, v), shape_error, "checkpoint '", file->label(), "': tensor '", name, "' has shape ",
                detail::vector_shape_string(info.shape), " but the vision config needs ", shape_string(v));
    file->read_into(name, v);
    used.insert(name);
  });
  const auto& c = m.config();
  for (const auto& f : files)
    for (const auto& name : f.names())
      BLIP2_CHECK(used.count(name) || name.rfind("vision_model.", 0) != 0, format_error, "checkpoint '", f.label(),
                  "': tensor '", name, "' belongs to the vision model but this configuration (", c.num_hidden_layers,
                  " layers, qkv_bias ", c.qkv_bias ? "true" : "false",
                  ") has no such parameter: config.json and the weights disagree");
}
template <class T>
void load_vision_weights(vision_model<T>& m, const safetensors_file& file) {
  load_vision_weights(m, std::span<const safetensors_file>(&file, 1));
}

// The image encoder of a checkpoint directory (config.json + model.safetensors or its shards).
template <class T = float>
vision_model<T> load_vision_model(const std::filesystem::path& dir) {
  const vision_config cfg = load_vision_config(dir / "config.json");
  const std::vector<safetensors_file> files = open_checkpoint_files(dir);
  vision_model<T> m(cfg);
  load_vision_weights(m, std::span<const safetensors_file>(files));
  return m;
}

}  // namespace blip2
