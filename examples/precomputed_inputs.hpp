// examples/precomputed_inputs.hpp: reading the precomputed inputs file (--inputs IN.safetensors) that
// qformer_features and stage1_step share: `image_embeds` (float, (B, N, E)), `input_ids` (int64, (B, T))
// and `attention_mask` (int64, the shape of input_ids). Each check names the file, the tensor, its shape
// and the shape expected; what differs between the programs (whether text is required, the extra tensors
// of stage1_step) stays in each program.
#pragma once
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "blip2/io/safetensors.hpp"
#include "blip2/models/qformer/config.hpp"

namespace blip2::cli {

// "inputs 'PATH'": how the checks below name the file.
inline std::string inputs_where(const std::filesystem::path& path) { return "inputs '" + path.string() + "'"; }

inline std::string shape_of(const auto& t) { return detail::vector_shape_string(t.shape); }

// image_embeds, (B, N, E) with B, N >= 1 and E the model's encoder_hidden_size.
inline dynamic_tensor<float> read_image_embeds(const safetensors_file& file, const std::string& where,
                                               const qformer_model_config& cfg) {
  if (!file.contains("image_embeds"))
    detail::raise<value_error>(where, ": ", "no tensor 'image_embeds' (float, shape (B, N, E) with E = encoder_hidden_size = ",
                               cfg.qformer.encoder_hidden_size, ")");
  auto image = file.load_dynamic<float>("image_embeds");
  if (image.shape.size() != 3)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape_of(image), ", expected (B, N, E)");
  if (image.shape[0] < 1 || image.shape[1] < 1)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape_of(image),
                               ", expected at least one image (B >= 1) of at least one token (N >= 1)");
  if (image.shape[2] != cfg.qformer.encoder_hidden_size)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape_of(image), " but its last dimension must be ",
                               "the model's encoder_hidden_size = ", cfg.qformer.encoder_hidden_size);
  return image;
}

// input_ids (the file has it), (B, T) with T >= 1: one text per image.
inline dynamic_tensor<index_t> read_input_ids(const safetensors_file& file, const std::string& where, index_t B) {
  auto ids = file.load_dynamic<index_t>("input_ids");
  if (ids.shape.size() != 2 || ids.shape[0] != B || ids.shape[1] < 1)
    detail::raise<shape_error>(where, ": 'input_ids' has shape ", shape_of(ids), ", expected (B, T) with B = ", B,
                               " (one text per image) and T >= 1");
  return ids;
}

// attention_mask when the file has it, with the shape of input_ids.
inline std::optional<dynamic_tensor<index_t>> read_attention_mask(const safetensors_file& file, const std::string& where,
                                                                   const dynamic_tensor<index_t>& ids) {
  if (!file.contains("attention_mask")) return std::nullopt;
  auto mask = file.load_dynamic<index_t>("attention_mask");
  if (mask.shape != ids.shape)
    detail::raise<shape_error>(where, ": 'attention_mask' has shape ", shape_of(mask), " but 'input_ids' has shape ",
                               shape_of(ids));
  return mask;
}

// A 0-d float32 tensor (a loss) as an output entry.
inline safetensors_entry scalar_entry(const std::string& name, float x) {
  std::vector<std::byte> b(sizeof x);
  std::memcpy(b.data(), &x, sizeof x);
  return safetensors_entry(name, safetensors_dtype::f32, std::vector<index_t>{}, std::move(b));
}

}  // namespace blip2::cli
