// blip2/nn/gelu.hpp: the exact GELU activation, forward and backward.
//
// Dimensions: any tensor; inside, R rows (all leading dimensions, flattened) by C (the last one).
//   forward:  out = 0.5 inp (1 + erf(inp / sqrt 2))      (the erf form, as BERT and the Q-Former use;
//             not the tanh approximation)
//   backward: dinp = dout * (Phi(inp) + inp phi(inp)), assigned, or added with grad_write::accumulate
// NaN in, NaN out (forward and backward).
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Out, class In>
void gelu_forward(Be& be, Out&& out, In&& inp) {
  constexpr std::string_view op = "gelu_forward";
  auto ov = view(out);
  auto iv = view(inp);
  static_assert(decltype(ov)::rank == decltype(iv)::rank, "gelu_forward: out and inp must have the same rank");
  static_assert(detail::same_value_type_v<decltype(ov), decltype(iv)>, "gelu_forward: out and inp differ in type");
  detail::check_shape(op, "out", ov, iv.extents());
  auto o = detail::arg_rows<Be>(ov);                    // (R, C)
  auto i = detail::as_const(detail::arg_rows<Be>(iv));  // (R, C)
  BLIP2_DISPATCH(Be, gelu_forward, be, o, i);
}

template <backend Be, class DInp, class DOut, class In>
void gelu_backward(Be& be, DInp&& dinp, DOut&& dout, In&& inp, grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "gelu_backward";
  auto div = view(dinp);
  auto dov = view(dout);
  auto iv = view(inp);
  static_assert(decltype(div)::rank == decltype(iv)::rank && decltype(dov)::rank == decltype(iv)::rank,
                "gelu_backward: dinp, dout and inp must have the same rank");
  static_assert(detail::same_value_type_v<decltype(div), decltype(iv)> &&
                    detail::same_value_type_v<decltype(dov), decltype(iv)>,
                "gelu_backward: dinp, dout and inp differ in type");
  detail::check_shape(op, "dinp", div, iv.extents());
  detail::check_shape(op, "dout", dov, iv.extents());
  auto di = detail::arg_rows<Be>(div);                    // (R, C)
  auto d = detail::as_const(detail::arg_rows<Be>(dov));   // (R, C)
  auto i = detail::as_const(detail::arg_rows<Be>(iv));    // (R, C)
  BLIP2_DISPATCH(Be, gelu_backward, be, di, d, i, mode);
}

}  // namespace blip2
