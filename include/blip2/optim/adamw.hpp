// blip2/optim/adamw.hpp: AdamW with decoupled weight decay (torch.optim.AdamW semantics) over one flat
// parameter arena, and the weight-decay groups of the Q-Former by Hugging Face name.
//
// One update, for every element i, at step count t (t = 1 on the first update), exactly in the order
// torch.optim.AdamW (single-tensor path, amsgrad off, maximize off) does it:
//   p  = p * (1 - lr * wd)                       decayed elements only, applied BEFORE the Adam update
//   m  = m + (1 - b1) * (g - m)                  = b1 m + (1 - b1) g   (torch: exp_avg.lerp_(g, 1 - b1))
//   v  = v * b2 + (1 - b2) * g * g               (torch: exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2))
//   bc1 = 1 - b1^t, bc2 = 1 - b2^t
//   p  = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
//      = p - lr * m_hat / (sqrt(v_hat) + eps)     with m_hat = m / bc1, v_hat = v / bc2
// BLIP-2's defaults (the paper's pre-training setup): betas (0.9, 0.98), weight_decay 0.05; eps 1e-8 (torch's).
// The arithmetic of one element is done in double and rounded to T when p, m, v are stored (torch
// computes in T); m and v are stored in T, and the update reads them back as stored, so the state
// is exactly what a checkpoint saves. Elements are independent: the result does not depend on the
// number of OpenMP threads, and a resumed run is bitwise identical to an uninterrupted one.
//
// Weight decay is per segment: a list of {name, offset, size, decay} covering the arena in order.
// decay_groups(model) builds it from the Hugging Face names (for_each_parameter order, which is the
// arena order). The rule (no_decay_rule::blip2, the default) does NOT decay:
//   - LayerNorm weights and biases (a name containing "LayerNorm" or "layernorm"),
//   - every bias (a name ending in ".bias", and "cls.predictions.bias"),
//   - query_tokens and temp;
// everything else (dense weights, word/position embeddings) is decayed.
// no_decay_rule::lavis is LAVIS's own rule (BaseModel.get_optimizer_params / runner_base): no decay when
// p.ndim < 2 or the name contains "bias", "ln" or "bn". On the Q-Former's names the two differ only in
// query_tokens, which LAVIS decays (it is (1, Q, C)).
//
//   auto opt = blip2::make_adamw(model);                         // decay groups from the names
//   for (step...) { ...backward...; opt.step(model.parameters(), model.gradients(), schedule(step)); }
//   blip2::adamw<float, blip2::cuda_space> gpu_opt(n, options, decay_groups(cfg));   // a device model's:
//   gpu_opt.step(cuda, gpu_model.parameter_view(), gpu_model.gradient_view(), lr);
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "blip2/core/buffer.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/nn/adamw_update.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/optim/adamw_rule.hpp"

namespace blip2 {

struct adamw_options {
  double beta1 = 0.9;
  double beta2 = 0.98;        // BLIP-2 (torch's default is 0.999)
  double eps = 1e-8;
  double weight_decay = 0.05; // BLIP-2 (torch's default is 0.01)
};

// A run of the arena that shares one weight-decay setting (usually one named parameter).
struct param_segment {
  std::string name;
  index_t offset = 0;
  index_t size = 0;
  bool decay = true;
};

enum class no_decay_rule {
  blip2,  // LayerNorm weights/biases, every bias, query_tokens, temp (see the top of this file)
  lavis,  // LAVIS: ndim < 2, or the name contains "bias", "ln" or "bn"
};

// Whether a parameter of this name and rank gets weight decay under `rule`.
inline bool decays(std::string_view name, std::size_t rank, no_decay_rule rule = no_decay_rule::blip2) {
  auto contains = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (rule == no_decay_rule::lavis) return !(rank < 2 || contains("bias") || contains("ln") || contains("bn"));
  const bool layer_norm = contains("LayerNorm") || contains("layernorm");
  const bool bias = name.ends_with(".bias") || name == "cls.predictions.bias";
  return !(layer_norm || bias || name == "query_tokens" || name == "temp");
}

// One segment per parameter of a Q-Former of this configuration, in arena order.
inline std::vector<param_segment> decay_groups(const qformer_model_config& cfg, no_decay_rule rule = no_decay_rule::blip2) {
  qformer_weights<float> shapes;  // shapes only (null data): the element type does not matter
  detail::shape_weights(cfg, shapes);
  std::vector<param_segment> out;
  index_t offset = 0;
  for_each_parameter(cfg, shapes, [&](const std::string& name, auto& v) {
    out.push_back({name, offset, v.size(), decays(name, std::decay_t<decltype(v)>::rank, rule)});
    offset += v.size();
  });
  return out;
}
template <class T>
std::vector<param_segment> decay_groups(const qformer_model<T>& model, no_decay_rule rule = no_decay_rule::blip2) {
  return decay_groups(model.config(), rule);
}

// The optimiser state (moments m, v and the step count) lives in memory space Space, next to the
// parameters: a host optimiser steps spans (step(params, grads, lr)); any optimiser steps views in its
// space through a backend (step(be, params, grads, lr): one op::adamw_update per segment, the same
// arithmetic and, on the CUDA backend, the same bits).
template <class T, memory_space Space = host_space>
class adamw {
  static_assert(std::is_floating_point_v<T>, "blip2::adamw: parameters must be float or double");

 public:
  // An optimiser for `size` parameters. `segments` must cover [0, size) in order without gaps; empty:
  // one segment, decayed. Throws value_error for options outside torch's domain or bad segments.
  explicit adamw(index_t size, adamw_options options = {}, std::vector<param_segment> segments = {})
      : options_(options), segments_(std::move(segments)), size_(size) {
    BLIP2_CHECK(size >= 0, value_error, "adamw: size = ", size, " must be >= 0");
    check_options(options_);
    if (segments_.empty()) segments_.push_back({"all", 0, size, true});
    index_t expect = 0;
    for (const auto& s : segments_) {
      BLIP2_CHECK(s.offset == expect && s.size >= 0, value_error, "adamw: segment '", s.name, "' at offset ", s.offset,
                  " (size ", s.size, ") should start at ", expect, ": segments must cover the parameters in order");
      expect += s.size;
    }
    BLIP2_CHECK(expect == size, value_error, "adamw: the segments cover ", expect, " elements but there are ", size,
                " parameters");
    // zeros on the host; a device state is zeroed by its first step (the constructor has no backend)
    m_.reserve_elements(static_cast<std::size_t>(size));
    v_.reserve_elements(static_cast<std::size_t>(size));
    zeroed_ = Space::host_accessible;
  }

  // One update with learning rate lr (from a schedule). Throws shape_error when a span has another
  // length than size(), value_error for a negative or non-finite lr. Non-finite gradients are not
  // checked here (clip_grad_norm reports them; skip the step then).
  void step(std::span<T> params, std::span<const T> grads, double lr)
    requires(Space::host_accessible)
  {
    check_step(static_cast<index_t>(params.size()), static_cast<index_t>(grads.size()), lr);
    ++step_;
    T* p = params.data();
    const T* g = grads.data();
    T* m = m_.data();
    T* v = v_.data();
    const adamw_step_constants decayed = constants(lr, true), plain = constants(lr, false);
#if defined(_OPENMP)
#pragma omp parallel
#endif
    for (const auto& seg : segments_) {
      const index_t end = seg.offset + seg.size;
      const adamw_step_constants& k = seg.decay ? decayed : plain;
      if constexpr (std::is_same_v<T, float>) {
        // float parameters: memory-bound (4 floats read, 3 written per element); the double form is far
        // slower (timing in benchmarks/README.md)
        const adamw_float_constants kf(k);
#if defined(_OPENMP)
#pragma omp for simd schedule(static) nowait
#endif
        for (index_t i = seg.offset; i < end; ++i) adamw_update_element(p[i], m[i], v[i], g[i], kf);
        continue;
      }
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
      for (index_t i = seg.offset; i < end; ++i) adamw_update_element(p[i], m[i], v[i], g[i], k);
    }
  }

  // The same update on backend be, over views in its memory (one adamw_update op per segment).
  template <backend Be>
  void step(Be& be, std::type_identity_t<tensor_view<T, 1, Space>> params,
            std::type_identity_t<tensor_view<const T, 1, Space>> grads, double lr) {
    static_assert(std::is_same_v<typename Be::memory_space, Space>, "adamw::step: the backend works in another memory space");
    check_step(params.extent(0), grads.extent(0), lr);
    if (!zeroed_) {
      fill(be, exp_avg_view(), T{});
      fill(be, exp_avg_sq_view(), T{});
      zeroed_ = true;
    }
    ++step_;
    const adamw_step_constants decayed = constants(lr, true), plain = constants(lr, false);
    for (const auto& seg : segments_) {
      if (seg.size == 0) continue;
      auto part = [&](auto v) { return row_range(v, seg.offset, seg.offset + seg.size); };
      adamw_update(be, part(params), part(exp_avg_view()), part(exp_avg_sq_view()), part(grads), seg.decay ? decayed : plain);
    }
  }

  index_t size() const { return size_; }
  // Updates done so far (t of the last update); the bias corrections use it.
  std::int64_t step_count() const { return step_; }
  void set_step_count(std::int64_t t) {
    BLIP2_CHECK(t >= 0, value_error, "adamw: step count ", t, " must be >= 0");
    step_ = t;
  }
  // First and second moments, laid out like the parameters (spans: host optimisers only).
  std::span<T> exp_avg() requires(Space::host_accessible) { return {m_.data(), static_cast<std::size_t>(size_)}; }
  std::span<const T> exp_avg() const requires(Space::host_accessible) { return {m_.data(), static_cast<std::size_t>(size_)}; }
  std::span<T> exp_avg_sq() requires(Space::host_accessible) { return {v_.data(), static_cast<std::size_t>(size_)}; }
  std::span<const T> exp_avg_sq() const requires(Space::host_accessible) { return {v_.data(), static_cast<std::size_t>(size_)}; }
  tensor_view<T, 1, Space> exp_avg_view() { return {m_.data(), {size_}}; }
  tensor_view<T, 1, Space> exp_avg_sq_view() { return {v_.data(), {size_}}; }
  const std::vector<param_segment>& segments() const { return segments_; }
  const adamw_options& options() const { return options_; }
  void set_options(const adamw_options& o) {
    check_options(o);
    options_ = o;
  }
  // Back to the state of a new optimiser (moments zero, step count 0).
  void reset() {
    if constexpr (Space::host_accessible) {
      std::fill(m_.data(), m_.data() + size_, T{});
      std::fill(v_.data(), v_.data() + size_, T{});
    } else {
      zeroed_ = false;  // zeroed by the next step
    }
    step_ = 0;
  }

 private:
  static void check_options(const adamw_options& o) {
    BLIP2_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, value_error, "adamw: betas (", o.beta1, ", ",
                o.beta2, ") must be in [0, 1)");
    BLIP2_CHECK(o.eps >= 0 && std::isfinite(o.eps), value_error, "adamw: eps = ", o.eps, " must be finite and >= 0");
    BLIP2_CHECK(o.weight_decay >= 0 && std::isfinite(o.weight_decay), value_error, "adamw: weight_decay = ",
                o.weight_decay, " must be finite and >= 0");
  }
  void check_step(index_t params, index_t grads, double lr) const {
    BLIP2_CHECK(params == size() && grads == size(), shape_error, "adamw::step: params has ", params,
                " elements and grads ", grads, " but the optimiser has ", size());
    BLIP2_CHECK(std::isfinite(lr) && lr >= 0, value_error, "adamw::step: lr = ", lr, " must be finite and >= 0");
  }
  // The constants of update step_ (already counted) at rate lr, for a segment that decays or not.
  adamw_step_constants constants(double lr, bool decay) const {
    const double b1 = options_.beta1, b2 = options_.beta2, t = static_cast<double>(step_);
    adamw_step_constants k;
    k.step_size = lr / (1.0 - std::pow(b1, t));
    k.bc2_sqrt = std::sqrt(1.0 - std::pow(b2, t));
    k.decay = decay ? 1.0 - lr * options_.weight_decay : 1.0;
    k.beta2 = b2;
    k.one_minus_beta1 = 1.0 - b1;
    k.one_minus_beta2 = 1.0 - b2;
    k.eps = options_.eps;
    return k;
  }

  adamw_options options_;
  std::vector<param_segment> segments_;
  index_t size_ = 0;
  buffer<T, Space> m_, v_;
  bool zeroed_ = true;
  std::int64_t step_ = 0;
};

// An AdamW for every parameter of `model`, decayed by name (decay_groups).
template <class T>
adamw<T> make_adamw(const qformer_model<T>& model, adamw_options options = {}, no_decay_rule rule = no_decay_rule::blip2) {
  return adamw<T>(parameter_count<T>(model.config()), options, decay_groups(model, rule));
}

}  // namespace blip2
