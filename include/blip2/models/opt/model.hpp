// blip2/models/opt/model.hpp: an OPT decoder's parameters (and, when trained, their gradients).
//
// Two ways to hold them:
//   - owned: one arena in the backend's memory space (random init, a copy of a file, a trained LM),
//     with a gradient arena of the same layout when made with opt_storage::with_gradients;
//   - borrowed: views into memory someone else keeps alive (io/opt_checkpoint.hpp maps a float32
//     safetensors file and views its tensors in place: a 10 GB decoder is never copied). The views are
//     read-only memory: such a model is frozen (no gradients; writing its weights is an error).
#pragma once
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "blip2/core/buffer.hpp"
#include "blip2/models/opt/weights.hpp"
#include "blip2/nn/fill.hpp"

namespace blip2 {

enum class opt_storage { frozen, with_gradients };

template <class T, memory_space Space = host_space>
class opt_model {
 public:
  using memory_space_type = Space;
  // Owned parameters, all zero (and gradients when asked for).
  explicit opt_model(const opt_config& cfg, opt_storage storage = opt_storage::frozen) : cfg_(checked(cfg)) {
    const index_t n = opt_parameter_count(cfg_);
    params_.reserve_elements(static_cast<std::size_t>(n));
    w = bind_opt_weights<T, Space>(cfg_, params_.data());
    if (storage == opt_storage::with_gradients) {
      grads_.reserve_elements(static_cast<std::size_t>(n));
      g = bind_opt_weights<T, Space>(cfg_, grads_.data());
    }
  }
  // Borrowed parameters: views that `keep_alive` keeps valid (frozen).
  opt_model(const opt_config& cfg, opt_weights<T, Space> views, std::shared_ptr<const void> keep_alive)
      : w(std::move(views)), cfg_(checked(cfg)), keep_alive_(std::move(keep_alive)) {}
  opt_model(const opt_model&) = delete;  // the views point into this object's arenas
  opt_model& operator=(const opt_model&) = delete;
  opt_model(opt_model&&) = default;
  opt_model& operator=(opt_model&&) = default;

  const opt_config& config() const { return cfg_; }
  bool trainable() const { return grads_.size() > 0; }
  bool owns_parameters() const { return params_.size() > 0; }
  // the owned parameters (gradients) as one flat view, in for_each_opt_parameter order
  tensor_view<T, 1, Space> parameter_view() { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  tensor_view<T, 1, Space> gradient_view() { return {grads_.data(), {static_cast<index_t>(grads_.size())}}; }
  std::span<T> parameters() requires(Space::host_accessible) { return {params_.data(), params_.size()}; }
  std::span<T> gradients() requires(Space::host_accessible) { return {grads_.data(), grads_.size()}; }
  template <backend Be>
  void zero_grad(Be& be) {
    if (trainable()) fill(be, gradient_view(), T{});
  }
  // bfloat16 copies of the matrices a decode step reads (every layer's six linears and the lm_head), which
  // the forward uses from then on (blocks/apply_linear.hpp): half the bytes per generated token. Without
  // keep_float32 the float views of those matrices are dropped (their memory stays with its owner: an
  // owned arena, or the mapped file's pages, which are then never touched again); backward then refuses.
  void store_bfloat16(bool keep_float32 = true) requires(Space::host_accessible) {
    BLIP2_CHECK(!trainable(), value_error, "opt_model::store_bfloat16: a trainable decoder would train its float "
                "weights while the forward read the bfloat16 copies; make the copies of a frozen one");
    BLIP2_CHECK(!has_bfloat16(), value_error, "opt_model::store_bfloat16: the copies exist already");
    std::vector<linear_weights<T, Space>*> mats;
    for (auto& l : w.layers)
      for (auto* lw : {&l.self.query, &l.self.key, &l.self.value, &l.self.dense, &l.ffn.intermediate, &l.ffn.output})
        mats.push_back(lw);
    std::size_t n = static_cast<std::size_t>(w.lm_head.size());
    for (auto* lw : mats) n += static_cast<std::size_t>(lw->weight.size());
    bf16_.assign(n, bfloat16{});
    std::size_t at = 0;
    auto convert = [&](const tensor_view<T, 2, Space>& src) {
      BLIP2_CHECK(src.data() && src.is_contiguous(), value_error,
                  "opt_model::store_bfloat16: a weight is missing or not contiguous (already dropped?)");
      bfloat16* dst = bf16_.data() + at;
      if constexpr (std::is_same_v<T, float>) {
        to_bfloat16(src.data(), dst, static_cast<std::size_t>(src.size()));
      } else {
        for (index_t k = 0; k < src.size(); ++k) dst[k] = to_bfloat16(static_cast<float>(src.data()[k]));
      }
      at += static_cast<std::size_t>(src.size());
      return tensor_view<const bfloat16, 2, Space>(dst, src.extents());
    };
    for (auto* lw : mats) {
      lw->weight_bf16 = convert(lw->weight);
      if (!keep_float32) lw->weight = {};
    }
    w.lm_head_bf16 = convert(w.lm_head);
    bf16_only_ = !keep_float32;
  }
  // Whether the forward reads bfloat16 copies (store_bfloat16), and whether the float ones were dropped.
  bool has_bfloat16() const { return !bf16_.empty(); }
  bool bfloat16_only() const { return bf16_only_; }

  // The gradients the decoder's backward adds into: null when frozen (no parameter gradient is computed).
  opt_weights<T, Space>* gradients_or_null() { return trainable() ? &g : nullptr; }

  opt_weights<T, Space> w;  // parameters, by Hugging Face name (for_each_opt_parameter)
  opt_weights<T, Space> g;  // their gradients (trainable models only)

 private:
  static opt_config checked(const opt_config& c) {
    check_opt_config(c);
    return c;
  }
  opt_config cfg_;
  buffer<T, Space> params_, grads_;
  std::shared_ptr<const void> keep_alive_;
  std::vector<bfloat16> bf16_;  // store_bfloat16's copies
  bool bf16_only_ = false;
};

}  // namespace blip2
