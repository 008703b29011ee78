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
#include "blip2/nn/elementwise.hpp"

namespace blip2 {

template <backend Be, class Out, class In>
void gelu_forward(Be& be, Out&& out, In&& inp) {
  auto [o, i] = detail::activation_forward_args<Be>("gelu_forward", out, inp);  // (R, C), (R, C)
  BLIP2_DISPATCH(Be, gelu_forward, be, o, i);
}

template <backend Be, class DInp, class DOut, class In>
void gelu_backward(Be& be, DInp&& dinp, DOut&& dout, In&& inp, grad_write mode = grad_write::assign) {
  auto [di, d, i] = detail::activation_backward_args<Be>("gelu_backward", dinp, dout, inp);  // (R, C) each
  BLIP2_DISPATCH(Be, gelu_backward, be, di, d, i, mode);
}

}  // namespace blip2
