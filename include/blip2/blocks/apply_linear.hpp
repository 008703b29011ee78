// blip2/blocks/apply_linear.hpp: a block's linear layer, forward, from whichever copy of its weight the
// model holds: float (linear_forward, the backend's GEMM) or bfloat16 (linear_bf16_forward: half the
// bytes, for a frozen LLM whose decode steps are bound by reading the weights).
//
// Dimensions: R rows, K input features, N output features: out (R, N) = in (R, K) W^T + b.
#pragma once
#include "blip2/blocks/weights.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/linear_bf16.hpp"

namespace blip2 {

template <backend Be, class T, memory_space S>
void apply_linear(Be& be, tensor_view<T, 2, S> out, tensor_view<const T, 2, S> in, const linear_weights<T, S>& lw) {
  if (lw.weight_bf16.data())
    linear_bf16_forward(be, out, in, lw.weight_bf16, lw.bias);
  else
    linear_forward(be, out, in, lw.weight, lw.bias);
}

}  // namespace blip2
