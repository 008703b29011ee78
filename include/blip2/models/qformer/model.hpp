// blip2/models/qformer/model.hpp: the Q-Former's parameters and their gradients, two arenas of one layout.
//
// qformer_model<T, Space> owns both, in the backend's memory space; w and g are the named views into them
// (models/qformer/weights.hpp lists the names). The passes read w and add into g. Both start at zero.
#pragma once
#include <algorithm>
#include <span>
#include <vector>

#include "blip2/core/buffer.hpp"
#include "blip2/core/check.hpp"
#include "blip2/models/qformer/weights.hpp"
#include "blip2/nn/fill.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
class qformer_model {
 public:
  using memory_space_type = Space;
  explicit qformer_model(const qformer_model_config& cfg) : cfg_(validated(cfg)) {
    const index_t n = parameter_count<T>(cfg_);
    params_.reserve_elements(static_cast<std::size_t>(n));
    grads_.reserve_elements(static_cast<std::size_t>(n));
    w = bind_weights<T, Space>(cfg_, params_.data());
    g = bind_weights<T, Space>(cfg_, grads_.data());
  }
  qformer_model(const qformer_model&) = delete;  // the views point into this object's arenas
  qformer_model& operator=(const qformer_model&) = delete;
  qformer_model(qformer_model&&) = default;      // buffers keep their memory when moved
  qformer_model& operator=(qformer_model&&) = default;

  const qformer_model_config& config() const { return cfg_; }
  // every parameter (gradient) as one flat view, in the order of for_each_parameter
  tensor_view<T, 1, Space> parameter_view() { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  tensor_view<T, 1, Space> gradient_view() { return {grads_.data(), {static_cast<index_t>(grads_.size())}}; }
  tensor_view<const T, 1, Space> parameter_view() const { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  tensor_view<const T, 1, Space> gradient_view() const { return {grads_.data(), {static_cast<index_t>(grads_.size())}}; }
  template <backend Be>
  void zero_grad(Be& be) {
    fill(be, gradient_view(), T{});
  }
  // host models: the same as spans, and zeroing without a backend
  std::span<T> parameters() requires(Space::host_accessible) { return {params_.data(), params_.size()}; }
  std::span<T> gradients() requires(Space::host_accessible) { return {grads_.data(), grads_.size()}; }
  void zero_grad() requires(Space::host_accessible) { std::fill(grads_.data(), grads_.data() + grads_.size(), T{}); }

  qformer_weights<T, Space> w;  // parameters, by Hugging Face name (for_each_parameter)
  qformer_weights<T, Space> g;  // their gradients

 private:
  static qformer_model_config validated(const qformer_model_config& c) {
    const auto& q = c.qformer;
    BLIP2_CHECK(q.hidden_size > 0 && q.num_attention_heads > 0 && q.hidden_size % q.num_attention_heads == 0,
                value_error, "qformer: hidden_size = ", q.hidden_size, " must be a positive multiple of num_attention_heads = ",
                q.num_attention_heads);
    BLIP2_CHECK(q.num_hidden_layers >= 0 && q.intermediate_size > 0 && q.encoder_hidden_size > 0 &&
                    q.cross_attention_frequency > 0 && c.num_query_tokens > 0 && c.image_text_hidden_size > 0 &&
                    q.vocab_size > 0 && q.max_position_embeddings > 0,
                value_error, "qformer: every size must be positive (and num_hidden_layers >= 0)");
    BLIP2_CHECK(!c.with_stage1_heads || c.with_text, value_error,
                "qformer: the stage-1 heads (ITG LM head, temp) need the text side");
    return c;
  }
  qformer_model_config cfg_;
  buffer<T, Space> params_, grads_;
};

}  // namespace blip2
