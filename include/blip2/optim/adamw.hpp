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
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/models/qformer/pass.hpp"

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

template <class T>
class adamw {
  static_assert(std::is_floating_point_v<T>, "blip2::adamw: parameters must be float or double");

 public:
  // An optimiser for `size` parameters. `segments` must cover [0, size) in order without gaps; empty:
  // one segment, decayed. Throws value_error for options outside torch's domain or bad segments.
  explicit adamw(index_t size, adamw_options options = {}, std::vector<param_segment> segments = {})
      : options_(options), segments_(std::move(segments)) {
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
    m_.assign(static_cast<std::size_t>(size), T{});
    v_.assign(static_cast<std::size_t>(size), T{});
  }

  // One update with learning rate lr (from a schedule). Throws shape_error when a span has another
  // length than size(), value_error for a negative or non-finite lr. Non-finite gradients are not
  // checked here (clip_grad_norm reports them; skip the step then).
  void step(std::span<T> params, std::span<const T> grads, double lr) {
    BLIP2_CHECK(static_cast<index_t>(params.size()) == size() && static_cast<index_t>(grads.size()) == size(), shape_error,
                "adamw::step: params has ", params.size(), " elements and grads ", grads.size(), " but the optimiser has ",
                size());
    BLIP2_CHECK(std::isfinite(lr) && lr >= 0, value_error, "adamw::step: lr = ", lr, " must be finite and >= 0");
    ++step_;
    const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
    const double t = static_cast<double>(step_);
    const double bc1 = 1.0 - std::pow(b1, t);
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, t));
    const double step_size = lr / bc1;
    const double decay_factor = 1.0 - lr * options_.weight_decay;
    const double w1 = 1.0 - b1, w2 = 1.0 - b2;
    T* p = params.data();
    const T* g = grads.data();
    T* m = m_.data();
    T* v = v_.data();
#if defined(_OPENMP)
#pragma omp parallel
#endif
    for (const auto& seg : segments_) {
      const index_t end = seg.offset + seg.size;
      if constexpr (std::is_same_v<T, float>) {
        // float parameters: the same update in float, the constants folded, a loop the compiler vectorises
        // (memory-bound: 4 floats read, 3 written per element; the double form is far slower; timing in
        // benchmarks/README.md).
        const float fb2 = static_cast<float>(b2), fw1 = static_cast<float>(w1), fw2 = static_cast<float>(w2);
        const float inv_bc2 = static_cast<float>(1.0 / bc2_sqrt), feps = static_cast<float>(eps);
        const float neg_step = static_cast<float>(-step_size);
        const float decay = seg.decay ? static_cast<float>(decay_factor) : 1.0f;
#if defined(_OPENMP)
#pragma omp for simd schedule(static) nowait
#endif
        for (index_t i = seg.offset; i < end; ++i) {
          const float gi = g[i];
          const float mi = m[i] + fw1 * (gi - m[i]);
          const float vi = v[i] * fb2 + fw2 * gi * gi;
          m[i] = mi;
          v[i] = vi;
          p[i] = p[i] * decay + neg_step * mi / (std::sqrt(vi) * inv_bc2 + feps);
        }
        continue;
      }
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
      for (index_t i = seg.offset; i < end; ++i) {
        const double gi = g[i];
        double pi = static_cast<double>(p[i]);
        if (seg.decay) pi *= decay_factor;
        const double mi = static_cast<double>(m[i]);
        m[i] = static_cast<T>(mi + w1 * (gi - mi));
        v[i] = static_cast<T>(static_cast<double>(v[i]) * b2 + w2 * gi * gi);
        const double denom = std::sqrt(static_cast<double>(v[i])) / bc2_sqrt + eps;
        p[i] = static_cast<T>(pi + (-step_size * static_cast<double>(m[i])) / denom);
      }
    }
  }

  index_t size() const { return static_cast<index_t>(m_.size()); }
  // Updates done so far (t of the last update); the bias corrections use it.
  std::int64_t step_count() const { return step_; }
  void set_step_count(std::int64_t t) {
    BLIP2_CHECK(t >= 0, value_error, "adamw: step count ", t, " must be >= 0");
    step_ = t;
  }
  // First and second moments, laid out like the parameters.
  std::span<T> exp_avg() { return m_; }
  std::span<const T> exp_avg() const { return m_; }
  std::span<T> exp_avg_sq() { return v_; }
  std::span<const T> exp_avg_sq() const { return v_; }
  const std::vector<param_segment>& segments() const { return segments_; }
  const adamw_options& options() const { return options_; }
  void set_options(const adamw_options& o) {
    check_options(o);
    options_ = o;
  }
  // Back to the state of a new optimiser (moments zero, step count 0).
  void reset() {
    std::fill(m_.begin(), m_.end(), T{});
    std::fill(v_.begin(), v_.end(), T{});
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

  adamw_options options_;
  std::vector<param_segment> segments_;
  std::vector<T> m_, v_;
  std::int64_t step_ = 0;
};

// An AdamW for every parameter of `model`, decayed by name (decay_groups).
template <class T>
adamw<T> make_adamw(const qformer_model<T>& model, adamw_options options = {}, no_decay_rule rule = no_decay_rule::blip2) {
  return adamw<T>(parameter_count<T>(model.config()), options, decay_groups(model, rule));
}

}  // namespace blip2
