// blip2/models/qformer/config.hpp: the Q-Former's sizes and options, as plain structs (no JSON here:
// io/hf_config.hpp reads them from a Hugging Face config.json).
#pragma once
#include <optional>
#include <string>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// Blip2QFormerConfig. Defaults are transformers' (= Salesforce/blip2-opt-2.7b, blip2-itm-vit-g).
struct qformer_config {
  index_t vocab_size = 30522;                 // V
  index_t hidden_size = 768;                  // C
  index_t num_hidden_layers = 12;             // L
  index_t num_attention_heads = 12;           // NH
  index_t intermediate_size = 3072;           // FFN width
  std::string hidden_act = "gelu";            // exact erf GELU
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  index_t max_position_embeddings = 512;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  std::optional<index_t> pad_token_id = 0;    // null in the file: no padding id
  std::optional<index_t> bos_token_id;        // absent or null: none ([DEC] is then vocab_size - 1)
  std::string position_embedding_type = "absolute";
  index_t cross_attention_frequency = 2;      // layer l cross-attends when l % frequency == 0
  index_t encoder_hidden_size = 1408;         // E, the image embedding width
  bool use_qformer_text_input = false;        // InstructBLIP-style text input to the Q-Former

  index_t head_size() const { return hidden_size / num_attention_heads; }  // HS
  bool has_cross_attention(index_t layer) const { return layer % cross_attention_frequency == 0; }
  // The id that replaces [CLS] for ITG: bos_token_id when given, else the last vocabulary entry.
  index_t dec_token_id() const { return bos_token_id ? *bos_token_id : vocab_size - 1; }
};

// What the Q-Former model needs beyond the Q-Former config: the number of learned queries, the ITC
// projection width, whether the text side exists (word/position embeddings, text FFNs, and the
// retrieval heads: vision and text projections, ITM head; a Blip2ForImageTextRetrieval checkpoint has
// it, a Blip2ForConditionalGeneration checkpoint does not).
struct qformer_model_config {
  qformer_config qformer;
  index_t num_query_tokens = 32;        // Q
  index_t image_text_hidden_size = 256; // D
  bool with_text = true;
  // The stage-1 training heads that Hugging Face has no class for: the ITG LM head
  // (cls.predictions.*, decoder tied to the word embeddings) and the ITC temperature `temp`.
  bool with_stage1_heads = false;
};

}  // namespace blip2
