// blip2/models/qformer/weights.hpp: the Q-Former's parameters as named views into one arena.
//
// Dimensions: Q queries, C hidden, F FFN width, E image width, V vocabulary, P positions, D projection.
// qformer_weights<T> is a struct of views (llm.c style); the same struct type holds the gradients, over a
// second arena with the same layout. Names are Hugging Face's Blip2ForImageTextRetrieval names, so a
// checkpoint loads and saves by name; for_each_parameter visits them in one fixed order.
#pragma once
#include <string>
#include <type_traits>
#include <vector>

#include "blip2/blocks/weights.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/models/qformer/config.hpp"

namespace blip2 {

// A BERT layer of the Q-Former (attention_weights and feed_forward_weights: blocks/weights.hpp).
template <class T, memory_space S = host_space>
struct qformer_layer_weights {
  attention_weights<T, S> self;
  bool has_cross = false;
  attention_weights<T, S> cross;        // only when has_cross
  feed_forward_weights<T, S> text;      // intermediate / output (absent without text)
  feed_forward_weights<T, S> query;     // intermediate_query / output_query
};
// BERT's LM prediction head (ITG): transform (dense, GELU, LayerNorm), then a decoder tied to the word
// embeddings plus its own bias.
template <class T, memory_space S = host_space>
struct lm_head_weights {
  linear_weights<T, S> transform;       // (C, C)   cls.predictions.transform.dense
  layer_norm_weights<T, S> norm;        // (C)      cls.predictions.transform.LayerNorm
  tensor_view<T, 1, S> bias;            // (V)      cls.predictions.bias
};
template <class T, memory_space S = host_space>
struct qformer_weights {
  tensor_view<T, 3, S> query_tokens;         // (1, Q, C)
  tensor_view<T, 2, S> word_embeddings;      // (V, C)   absent without text
  tensor_view<T, 2, S> position_embeddings;  // (P, C)   absent without text
  layer_norm_weights<T, S> embed_norm;       // qformer.layernorm
  std::vector<qformer_layer_weights<T, S>> layers;
  linear_weights<T, S> vision_projection;    // (D, C)  absent without text (the retrieval heads)
  linear_weights<T, S> text_projection;      // (D, C)  absent without text
  linear_weights<T, S> itm_head;             // (2, C)  absent without text
  lm_head_weights<T, S> lm_head;             // ITG head          only with stage-1 heads
  tensor_view<T, 0, S> temp;                 // ITC temperature   only with stage-1 heads
};

// Calls f(name, view) for every parameter, views of rank 0 (temp), 1, 2 or 3, in one fixed order. W is
// qformer_weights<T, S>, or const qformer_weights<T, S> to read only (f then gets const views).
template <class W>
inline constexpr bool is_qformer_weights = false;
template <class T, memory_space S>
inline constexpr bool is_qformer_weights<qformer_weights<T, S>> = true;

template <class W, class F>
  requires is_qformer_weights<std::remove_const_t<W>>
void for_each_parameter(const qformer_model_config& cfg, W& w, F&& f) {
  auto lin = [&](const std::string& n, auto& l) {
    f(n + ".weight", l.weight);
    f(n + ".bias", l.bias);
  };
  auto ln = [&](const std::string& n, auto& l) {
    f(n + ".weight", l.weight);
    f(n + ".bias", l.bias);
  };
  auto attn = [&](const std::string& n, auto& a) {
    lin(n + ".attention.query", a.query);
    lin(n + ".attention.key", a.key);
    lin(n + ".attention.value", a.value);
    lin(n + ".output.dense", a.dense);
    ln(n + ".output.LayerNorm", a.norm);
  };
  f(std::string("query_tokens"), w.query_tokens);
  if (cfg.with_text) {
    f(std::string("embeddings.word_embeddings.weight"), w.word_embeddings);
    f(std::string("embeddings.position_embeddings.weight"), w.position_embeddings);
  }
  ln("qformer.layernorm", w.embed_norm);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    const std::string p = "qformer.encoder.layer." + std::to_string(l);
    attn(p + ".attention", L.self);
    if (L.has_cross) attn(p + ".crossattention", L.cross);
    if (cfg.with_text) {
      lin(p + ".intermediate.dense", L.text.intermediate);
      lin(p + ".output.dense", L.text.output);
      ln(p + ".output.LayerNorm", L.text.norm);
    }
    lin(p + ".intermediate_query.dense", L.query.intermediate);
    lin(p + ".output_query.dense", L.query.output);
    ln(p + ".output_query.LayerNorm", L.query.norm);
  }
  if (cfg.with_text) {
    lin("vision_projection", w.vision_projection);
    lin("text_projection", w.text_projection);
    lin("itm_head", w.itm_head);
  }
  if (cfg.with_stage1_heads) {
    lin("cls.predictions.transform.dense", w.lm_head.transform);
    ln("cls.predictions.transform.LayerNorm", w.lm_head.norm);
    f(std::string("cls.predictions.bias"), w.lm_head.bias);
    f(std::string("temp"), w.temp);
  }
}

namespace detail {
// The shape each parameter has under cfg, given its slot (set before binding).
template <class T, memory_space S>
void shape_weights(const qformer_model_config& cfg, qformer_weights<T, S>& w) {
  const auto& q = cfg.qformer;
  const index_t C = q.hidden_size, F = q.intermediate_size, E = q.encoder_hidden_size;
  auto lin = [](linear_weights<T, S>& l, index_t n, index_t k) {
    l.weight = {nullptr, {n, k}};
    l.bias = {nullptr, {n}};
  };
  auto ln = [](layer_norm_weights<T, S>& l, index_t c) {
    l.weight = {nullptr, {c}};
    l.bias = {nullptr, {c}};
  };
  auto attn = [&](attention_weights<T, S>& a, index_t kv_width) {
    lin(a.query, C, C);
    lin(a.key, C, kv_width);
    lin(a.value, C, kv_width);
    lin(a.dense, C, C);
    ln(a.norm, C);
  };
  auto ffn = [&](feed_forward_weights<T, S>& f) {
    lin(f.intermediate, F, C);
    lin(f.output, C, F);
    ln(f.norm, C);
  };
  w.query_tokens = {nullptr, {1, cfg.num_query_tokens, C}};
  w.word_embeddings = {nullptr, {q.vocab_size, C}};
  w.position_embeddings = {nullptr, {q.max_position_embeddings, C}};
  ln(w.embed_norm, C);
  w.layers.assign(static_cast<std::size_t>(q.num_hidden_layers), {});
  for (index_t l = 0; l < q.num_hidden_layers; ++l) {
    auto& L = w.layers[static_cast<std::size_t>(l)];
    attn(L.self, C);
    L.has_cross = q.has_cross_attention(l);
    if (L.has_cross) attn(L.cross, E);
    ffn(L.text);
    ffn(L.query);
  }
  lin(w.vision_projection, cfg.image_text_hidden_size, C);
  lin(w.text_projection, cfg.image_text_hidden_size, C);
  lin(w.itm_head, 2, C);
  lin(w.lm_head.transform, C, C);
  ln(w.lm_head.norm, C);
  w.lm_head.bias = {nullptr, {q.vocab_size}};
  w.temp = {nullptr, {}};
}
}  // namespace detail

// Number of scalars in the parameter arena for cfg.
template <class T = float>
index_t parameter_count(const qformer_model_config& cfg) {
  qformer_weights<T> w;
  detail::shape_weights(cfg, w);
  index_t n = 0;
  for_each_parameter(cfg, w, [&](const std::string&, auto& v) { n += v.size(); });
  return n;
}

// Views of every parameter into arena (parameter_count(cfg) elements), in for_each_parameter order.
template <class T, memory_space S = host_space>
qformer_weights<T, S> bind_weights(const qformer_model_config& cfg, T* arena) {
  qformer_weights<T, S> w;
  detail::shape_weights(cfg, w);
  index_t offset = 0;
  for_each_parameter(cfg, w, [&](const std::string&, auto& v) {
    v = {arena + offset, v.extents()};
    offset += v.size();
  });
  return w;
}

}  // namespace blip2
