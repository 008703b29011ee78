// blip2/models/opt/weights.hpp: an OPT decoder's parameters as named views (llm.c's struct of views).
//
// Dimensions: V embedding rows, C hidden, Dw word width, F feed-forward width, Pmax positions.
// Names are Hugging Face's OPTForCausalLM names under a prefix ("language_model." inside BLIP-2), so a
// checkpoint loads by name; for_each_opt_parameter visits them in one fixed order. The same struct holds
// the gradients over a second arena when the decoder is trained (the stage-2 demo's small LM).
// The blocks (blocks/weights.hpp) name OPT's tensors:
//   self_attn.{q,k,v,out}_proj -> self.{query,key,value,dense}, self_attn_layer_norm -> self.norm,
//   fc1 / fc2 -> ffn.intermediate / ffn.output, final_layer_norm (of a layer) -> ffn.norm.
#pragma once
#include <string>
#include <vector>

#include "blip2/blocks/weights.hpp"
#include "blip2/models/opt/config.hpp"

namespace blip2 {

template <class T, memory_space S = host_space>
struct opt_layer_weights {
  attention_weights<T, S> self;
  feed_forward_weights<T, S> ffn;
};

template <class T, memory_space S = host_space>
struct opt_weights {
  tensor_view<T, 2, S> embed_tokens;     // (V, Dw)
  tensor_view<T, 2, S> embed_positions;  // (Pmax + 2, C)
  tensor_view<T, 2, S> project_in;       // (C, Dw), bias-free; empty unless Dw != C
  tensor_view<T, 2, S> project_out;      // (Dw, C), bias-free; empty unless Dw != C
  layer_norm_weights<T, S> final_norm;   // (C); empty for post-LN
  std::vector<opt_layer_weights<T, S>> layers;
  tensor_view<T, 2, S> lm_head;          // (V, Dw): a view of embed_tokens when tied
  tensor_view<const bfloat16, 2, S> lm_head_bf16;  // (V, Dw) bfloat16 copy, or empty (opt_model::store_bfloat16)
};

// Calls f(name, view) for every parameter (views of rank 1 or 2), in one fixed order. A tied lm_head is
// not a parameter of its own and is not visited.
template <class T, memory_space S, class F>
void for_each_opt_parameter(const opt_config& cfg, opt_weights<T, S>& w, F&& f,
                            const std::string& prefix = "language_model.") {
  const std::string d = prefix + "model.decoder.";
  auto lin = [&](const std::string& n, linear_weights<T, S>& l) {
    f(n + ".weight", l.weight);
    if (cfg.enable_bias) f(n + ".bias", l.bias);
  };
  auto ln = [&](const std::string& n, layer_norm_weights<T, S>& l) {
    f(n + ".weight", l.weight);
    f(n + ".bias", l.bias);
  };
  f(d + "embed_tokens.weight", w.embed_tokens);
  f(d + "embed_positions.weight", w.embed_positions);
  if (cfg.has_projections()) {
    f(d + "project_in.weight", w.project_in);
    f(d + "project_out.weight", w.project_out);
  }
  if (cfg.has_final_layer_norm()) ln(d + "final_layer_norm", w.final_norm);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    const std::string p = d + "layers." + std::to_string(l) + ".";
    lin(p + "self_attn.q_proj", L.self.query);
    lin(p + "self_attn.k_proj", L.self.key);
    lin(p + "self_attn.v_proj", L.self.value);
    lin(p + "self_attn.out_proj", L.self.dense);
    ln(p + "self_attn_layer_norm", L.self.norm);
    lin(p + "fc1", L.ffn.intermediate);
    lin(p + "fc2", L.ffn.output);
    ln(p + "final_layer_norm", L.ffn.norm);
  }
  if (!cfg.tie_word_embeddings) f(prefix + "lm_head.weight", w.lm_head);
}

namespace detail {
// Every view's shape under cfg (null data), set before binding.
template <class T, memory_space S>
void shape_opt_weights(const opt_config& cfg, opt_weights<T, S>& w) {
  const index_t C = cfg.hidden_size, F = cfg.ffn_dim, Dw = cfg.word_embed_proj_dim, V = cfg.vocab_size;
  auto lin = [&](linear_weights<T, S>& l, index_t n, index_t k) {
    l.weight = {nullptr, {n, k}};
    l.bias = cfg.enable_bias ? tensor_view<T, 1, S>{nullptr, {n}} : tensor_view<T, 1, S>{};
  };
  auto ln = [](layer_norm_weights<T, S>& l, index_t c) {
    l.weight = {nullptr, {c}};
    l.bias = {nullptr, {c}};
  };
  w = {};
  w.embed_tokens = {nullptr, {V, Dw}};
  w.embed_positions = {nullptr, {cfg.max_position_embeddings + 2, C}};
  if (cfg.has_projections()) {
    w.project_in = {nullptr, {C, Dw}};
    w.project_out = {nullptr, {Dw, C}};
  }
  if (cfg.has_final_layer_norm()) ln(w.final_norm, C);
  w.layers.assign(static_cast<std::size_t>(cfg.num_hidden_layers), {});
  for (auto& L : w.layers) {
    lin(L.self.query, C, C), lin(L.self.key, C, C), lin(L.self.value, C, C), lin(L.self.dense, C, C);
    ln(L.self.norm, C);
    lin(L.ffn.intermediate, F, C), lin(L.ffn.output, C, F);
    ln(L.ffn.norm, C);
  }
  w.lm_head = {nullptr, {V, Dw}};
}
}  // namespace detail

// Number of scalars in the parameter arena for cfg.
inline index_t opt_parameter_count(const opt_config& cfg) {
  opt_weights<float> w;
  detail::shape_opt_weights(cfg, w);
  index_t n = 0;
  for_each_opt_parameter(cfg, w, [&](const std::string&, auto& v) { n += v.size(); });
  return n;
}

// Views of every parameter into arena (opt_parameter_count(cfg) elements), in for_each_opt_parameter
// order; a tied lm_head views embed_tokens.
template <class T, memory_space S = host_space>
opt_weights<T, S> bind_opt_weights(const opt_config& cfg, T* arena) {
  opt_weights<T, S> w;
  detail::shape_opt_weights(cfg, w);
  index_t offset = 0;
  for_each_opt_parameter(cfg, w, [&](const std::string&, auto& v) {
    v = {arena + offset, v.extents()};
    offset += v.size();
  });
  if (cfg.tie_word_embeddings) w.lm_head = w.embed_tokens;
  return w;
}

}  // namespace blip2
