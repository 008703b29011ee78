// blip2/models/blip2_opt/model.hpp: BLIP-2 with an OPT language model (Hugging Face
// Blip2ForConditionalGeneration): the Q-Former's query path, the language projection and the decoder.
// The image encoder is held apart (models/vit), so a caller with precomputed image embeddings never
// loads it.
//
// Dimensions: Q queries, C Q-Former width, Dw the decoder's word width.
// Stage 2 trains the Q-Former and the projection (their gradients live beside them) and freezes the
// decoder (opt_model without gradients), as LAVIS's Blip2OPT does.
#pragma once
#include "blip2/models/opt/model.hpp"
#include "blip2/models/qformer/model.hpp"

namespace blip2 {

// language_projection: Linear(C -> Dw) with bias, and its gradient.
template <class T, memory_space Space = host_space>
class language_projection {
 public:
  language_projection(index_t C, index_t Dw) {
    params_.reserve_elements(static_cast<std::size_t>(Dw * C + Dw));
    grads_.reserve_elements(static_cast<std::size_t>(Dw * C + Dw));
    w.weight = {params_.data(), {Dw, C}}, w.bias = {params_.data() + Dw * C, {Dw}};
    g.weight = {grads_.data(), {Dw, C}}, g.bias = {grads_.data() + Dw * C, {Dw}};
  }
  language_projection(const language_projection&) = delete;
  language_projection& operator=(const language_projection&) = delete;
  language_projection(language_projection&&) = default;
  language_projection& operator=(language_projection&&) = default;

  tensor_view<T, 1, Space> parameter_view() { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  tensor_view<T, 1, Space> gradient_view() { return {grads_.data(), {static_cast<index_t>(grads_.size())}}; }
  template <backend Be>
  void zero_grad(Be& be) {
    fill(be, gradient_view(), T{});
  }

  linear_weights<T, Space> w;  // language_projection.{weight (Dw, C), bias (Dw)}
  linear_weights<T, Space> g;

 private:
  buffer<T, Space> params_, grads_;
};

template <class T = float, memory_space Space = host_space>
struct blip2_opt_model {
  qformer_model<T, Space> qformer;          // the query path (Blip2ForConditionalGeneration has no text side)
  language_projection<T, Space> projection;
  opt_model<T, Space> llm;                  // frozen unless made with gradients

  index_t num_query_tokens() const { return qformer.config().num_query_tokens; }
  template <backend Be>
  void zero_grad(Be& be) {  // the trainable parts: Q-Former (with query_tokens) and projection
    qformer.zero_grad(be);
    projection.zero_grad(be);
    llm.zero_grad(be);
  }
};

}  // namespace blip2
