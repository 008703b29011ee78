// blip2/nn/adamw_update.hpp: one AdamW update of a run of parameters, in the backend's memory: what
// adamw::step(be, ...) (optim/adamw.hpp) calls once per segment of the arena.
//
// Dimensions: n elements; params, exp_avg (m), exp_avg_sq (v) and grads are (n) views of the same length.
// For every element, in torch.optim.AdamW's order (optim/adamw_rule.hpp holds the arithmetic):
//   p = p decay;  m = m + (1 - b1)(g - m);  v = v b2 + (1 - b2) g g;  p = p - step_size m / (sqrt(v) / bc2_sqrt + eps)
// float runs in float with the constants folded; double in double. params, exp_avg and exp_avg_sq are
// read and written; grads is read.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"
#include "blip2/optim/adamw_rule.hpp"

namespace blip2 {

template <backend Be, class P, class M, class V, class G>
void adamw_update(Be& be, P&& params, M&& exp_avg, V&& exp_avg_sq, G&& grads, const adamw_step_constants& k) {
  constexpr std::string_view op = "adamw_update";
  auto p = detail::arg_view<Be, 1>(params);
  auto m = detail::arg_view<Be, 1>(exp_avg);
  auto v = detail::arg_view<Be, 1>(exp_avg_sq);
  auto g = detail::as_const(detail::arg_view<Be, 1>(grads));
  static_assert(detail::same_value_type_v<decltype(p), decltype(m)> && detail::same_value_type_v<decltype(p), decltype(v)> &&
                    detail::same_value_type_v<decltype(p), decltype(g)>,
                "adamw_update: params, exp_avg, exp_avg_sq and grads must have the same element type");
  const index_t n = p.extent(0);
  detail::check_shape(op, "exp_avg", m, {n});
  detail::check_shape(op, "exp_avg_sq", v, {n});
  detail::check_shape(op, "grads", g, {n});
  BLIP2_CHECK(k.bc2_sqrt > 0 && std::isfinite(k.step_size) && std::isfinite(k.decay), value_error, op,
              ": the constants must be finite with bc2_sqrt > 0 (a step count of at least 1)");
  BLIP2_DISPATCH(Be, adamw_update, be, p, m, v, g, k);
}

}  // namespace blip2
