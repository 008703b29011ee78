// blip2/nn/dropout.hpp: seeded (counter-based) dropout, forward and backward.
//
// Dimensions: any tensor; inside, R rows (all leading dimensions, flattened) by C (the last one).
//   forward:  out[i] = keep(seed, i) ? inp[i] / (1 - p) : 0, keep(seed, i) = uniform_float(seed, i) >= float(p),
//             i the flat row-major index (the rule is written once, in backend/reference/dropout.hpp,
//             and shared with attention's dropout)
//   backward: dinp[i] = keep(seed, i) ? dout[i] / (1 - p) : 0, assigned, or added with
//             grad_write::accumulate; the mask is drawn again from (seed, i), never stored
// p must be in [0, 1) (value_error otherwise); p == 0 is the identity. Give every dropout site and every
// step its own seed: two calls with the same seed and shape drop the same elements.
#pragma once
#include <cstdint>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Out, class In>
void dropout_forward(Be& be, Out&& out, In&& inp, double p, std::uint64_t seed) {
  constexpr std::string_view op = "dropout_forward";
  auto ov = view(out);
  auto iv = view(inp);
  static_assert(decltype(ov)::rank == decltype(iv)::rank, "dropout_forward: out and inp must have the same rank");
  static_assert(detail::same_value_type_v<decltype(ov), decltype(iv)>, "dropout_forward: out and inp differ in type");
  detail::check_shape(op, "out", ov, iv.extents());
  BLIP2_CHECK(p >= 0.0 && p < 1.0, value_error, op, ": p = ", p, " must be in [0, 1)");
  auto o = detail::arg_rows<Be>(ov);                    // (R, C)
  auto i = detail::as_const(detail::arg_rows<Be>(iv));  // (R, C)
  BLIP2_DISPATCH(Be, dropout_forward, be, o, i, p, seed);
}

template <backend Be, class DInp, class DOut>
void dropout_backward(Be& be, DInp&& dinp, DOut&& dout, double p, std::uint64_t seed,
                      grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "dropout_backward";
  auto div = view(dinp);
  auto dov = view(dout);
  static_assert(decltype(div)::rank == decltype(dov)::rank, "dropout_backward: dinp and dout must have the same rank");
  static_assert(detail::same_value_type_v<decltype(div), decltype(dov)>,
                "dropout_backward: dinp and dout differ in type");
  detail::check_shape(op, "dinp", div, dov.extents());
  BLIP2_CHECK(p >= 0.0 && p < 1.0, value_error, op, ": p = ", p, " must be in [0, 1)");
  auto di = detail::arg_rows<Be>(div);                   // (R, C)
  auto d = detail::as_const(detail::arg_rows<Be>(dov));  // (R, C)
  BLIP2_DISPATCH(Be, dropout_backward, be, di, d, p, seed, mode);
}

}  // namespace blip2
