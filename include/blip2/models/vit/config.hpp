// blip2/models/vit/config.hpp: the frozen image encoder's sizes (EVA ViT-g/14 as Hugging Face's
// Blip2VisionConfig has them), as a plain struct. io/hf_config.hpp reads it from config.json's
// "vision_config"; check_vision_config() is the one place its values are validated.
//
// Dimensions: E hidden (image width), F MLP width, NH heads, HS = E / NH head size, P patch size,
//             S image size, G = S / P patches per side, N = 1 + G^2 tokens (class token first).
#pragma once
#include <cmath>
#include <string>
#include <string_view>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// Blip2VisionConfig. Defaults are transformers' (= the EVA ViT-g/14 of every released BLIP-2).
struct vision_config {
  index_t hidden_size = 1408;        // E
  index_t intermediate_size = 6144;  // F
  index_t num_attention_heads = 16;  // NH (head size 88)
  index_t num_hidden_layers = 39;    // L
  index_t patch_size = 14;           // P
  index_t image_size = 224;          // S of the checkpoint's position embeddings (G = 16, N = 257)
  double layer_norm_eps = 1e-6;
  std::string hidden_act = "gelu";   // exact erf GELU (EVA's nn.GELU)
  bool qkv_bias = true;              // self_attn.qkv.bias = [q_bias ; 0 ; v_bias] (3E)

  static constexpr index_t num_channels = 3;  // RGB: Blip2VisionEmbeddings hard-codes in_channels=3

  index_t head_size() const { return hidden_size / num_attention_heads; }  // HS
  index_t grid() const { return image_size / patch_size; }                 // G of the checkpoint
  index_t num_positions() const { return grid() * grid() + 1; }            // rows of position_embedding
  index_t patch_dim() const { return num_channels * patch_size * patch_size; }  // 3 P P, im2col width
};

// Throws format_error naming `source` and the field (the qformer config's rule: sizes >= 1, the width
// divisible by the heads, eps finite and > 0, only the exact GELU) plus the image geometry: image_size
// a positive multiple of patch_size.
inline void check_vision_config(const vision_config& v, std::string_view source = "<config>") {
  auto fail = [&](auto&&... parts) { detail::raise<format_error>("Hugging Face config '", source, "': ", parts...); };
  auto positive = [&](const char* name, index_t x) {
    if (x < 1) fail("field 'vision_config.", name, "' = ", x, " must be >= 1");
  };
  positive("hidden_size", v.hidden_size);
  positive("intermediate_size", v.intermediate_size);
  positive("num_attention_heads", v.num_attention_heads);
  positive("num_hidden_layers", v.num_hidden_layers);
  positive("patch_size", v.patch_size);
  positive("image_size", v.image_size);
  if (v.hidden_size % v.num_attention_heads != 0)
    fail("vision_config.hidden_size = ", v.hidden_size, " is not divisible by vision_config.num_attention_heads = ",
         v.num_attention_heads);
  if (v.image_size % v.patch_size != 0)
    fail("vision_config.image_size = ", v.image_size, " is not a multiple of vision_config.patch_size = ", v.patch_size,
         " (the patch embedding is a convolution with stride = kernel = patch_size)");
  if (!(v.layer_norm_eps > 0) || !std::isfinite(v.layer_norm_eps))
    fail("field 'vision_config.layer_norm_eps' = ", v.layer_norm_eps, " must be a finite number > 0");
  if (v.hidden_act != "gelu")
    fail("field 'vision_config.hidden_act' = \"", v.hidden_act,
         "\": only \"gelu\" (exact erf GELU, as EVA ViT-g uses) is implemented");
}

}  // namespace blip2
