// blip2/models/opt/config.hpp: the sizes and options of an OPT decoder (Hugging Face OPTConfig), as a
// plain struct (no JSON here: io/opt_config.hpp reads it from a config.json's "text_config").
//
// Dimensions: V embedding rows, C hidden, Dw word-embedding width (= C except opt-350m), F feed-forward
// width, NH heads, Pmax positions (the position table has Pmax + 2 rows: fairseq's offset of 2).
#pragma once
#include <string>
#include <string_view>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// Defaults are transformers' OPTConfig (= facebook/opt-125m); the released BLIP-2 OPT models set theirs.
struct opt_config {
  index_t vocab_size = 50272;               // V: embedding rows (more than the tokenizer's 50265 tokens)
  index_t hidden_size = 768;                // C
  index_t num_hidden_layers = 12;
  index_t num_attention_heads = 12;         // NH
  index_t ffn_dim = 3072;                   // F
  index_t max_position_embeddings = 2048;   // Pmax
  index_t word_embed_proj_dim = 768;        // Dw: != C adds the bias-free project_in / project_out
  bool do_layer_norm_before = true;         // pre-LN (every size but 350m); false: post-LN, no final LayerNorm
  bool remove_final_layer_norm = false;     // _remove_final_layer_norm (only old 350m checkpoints)
  bool enable_bias = true;                  // biases of the attention and feed-forward linears
  bool layer_norm_elementwise_affine = true;
  std::string activation_function = "relu";
  double dropout = 0.1;                     // attention output and fc2 output (training only)
  double attention_dropout = 0.0;           // on the probabilities (training only)
  double layer_norm_eps = 1e-5;             // modeling_opt.py's nn.LayerNorm default
  index_t bos_token_id = 2, eos_token_id = 2, pad_token_id = 1;
  bool tie_word_embeddings = true;          // lm_head = embed_tokens

  index_t head_dim() const { return hidden_size / num_attention_heads; }
  bool has_projections() const { return word_embed_proj_dim != hidden_size; }
  bool has_final_layer_norm() const { return do_layer_norm_before && !remove_final_layer_norm; }
};

// format_error naming `source` for a configuration no decoder can be built from.
inline void check_opt_config(const opt_config& c, std::string_view source = "<config>") {
  auto fail = [&](auto&&... parts) { detail::raise<format_error>("OPT config '", source, "': ", parts...); };
  if (c.vocab_size < 1 || c.hidden_size < 1 || c.num_hidden_layers < 1 || c.num_attention_heads < 1 ||
      c.ffn_dim < 1 || c.max_position_embeddings < 1 || c.word_embed_proj_dim < 1)
    fail("every size, the layers included, must be positive (vocab_size ", c.vocab_size, ", hidden_size ", c.hidden_size,
         ", num_hidden_layers ", c.num_hidden_layers, ", num_attention_heads ", c.num_attention_heads, ", ffn_dim ",
         c.ffn_dim, ", max_position_embeddings ", c.max_position_embeddings, ", word_embed_proj_dim ",
         c.word_embed_proj_dim, ")");
  if (c.hidden_size % c.num_attention_heads != 0)
    fail("hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ", c.num_attention_heads);
  if (c.activation_function != "relu" && c.activation_function != "gelu")
    fail("activation_function \"", c.activation_function, "\" is not supported (relu or gelu)");
  if (!c.layer_norm_elementwise_affine) fail("layer_norm_elementwise_affine = false is not supported");
  if (!(c.dropout >= 0 && c.dropout < 1) || !(c.attention_dropout >= 0 && c.attention_dropout < 1))
    fail("dropout ", c.dropout, " and attention_dropout ", c.attention_dropout, " must be in [0, 1)");
  for (index_t id : {c.bos_token_id, c.eos_token_id, c.pad_token_id})
    if (id < 0 || id >= c.vocab_size) fail("token id ", id, " (bos, eos or pad) is outside [0, ", c.vocab_size, ")");
}

}  // namespace blip2
