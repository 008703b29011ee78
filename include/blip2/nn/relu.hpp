// blip2/nn/relu.hpp: the ReLU activation (OPT's feed-forward), forward and backward.
//
// Dimensions: any tensor; inside, R rows (all leading dimensions, flattened) by C (the last one).
//   forward:  out = max(inp, 0); NaN in, NaN out (as torch.relu)
//   backward: dinp = dout where inp > 0, else 0 (the derivative at 0 is taken as 0, as PyTorch does);
//             assigned, or added with grad_write::accumulate
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"
#include "blip2/nn/elementwise.hpp"

namespace blip2 {

template <backend Be, class Out, class In>
void relu_forward(Be& be, Out&& out, In&& inp) {
  auto [o, i] = detail::activation_forward_args<Be>("relu_forward", out, inp);  // (R, C), (R, C)
  BLIP2_DISPATCH(Be, relu_forward, be, o, i);
}

template <backend Be, class DInp, class DOut, class In>
void relu_backward(Be& be, DInp&& dinp, DOut&& dout, In&& inp, grad_write mode = grad_write::assign) {
  auto [di, d, i] = detail::activation_backward_args<Be>("relu_backward", dinp, dout, inp);  // (R, C) each
  BLIP2_DISPATCH(Be, relu_backward, be, di, d, i, mode);
}

}  // namespace blip2
