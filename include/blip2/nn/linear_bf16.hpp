// blip2/nn/linear_bf16.hpp: the fully connected layer with its weight stored in bfloat16 (a frozen LLM's
// decode path: each generated token reads every weight once, so half the bytes is nearly half the time).
//
// Dimensions: R rows (all leading dimensions of the input, flattened), K input features, N output features.
//   forward:  out = inp weight^T + bias     out (R, N), inp (R, K), weight (N, K) bfloat16, bias (N)
// out, inp and bias are float (or double, the tests' oracle precision); the weight is widened to float
// exactly (core/bfloat16.hpp) and every product is summed in float (in double for a double call).
// weight is row-major as PyTorch's Linear stores it; a backend may need its rows dense (stride(1) == 1)
// for speed, and takes any strides at the reference loop's speed. Forward only: the weights are frozen.
// An overload without bias.
#pragma once
#include <type_traits>

#include "blip2/backend/backend.hpp"
#include "blip2/core/bfloat16.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {

template <class Be, class O, class I, class W, class B>
void linear_bf16_forward_checked(Be& be, O o, I i, W w, B b) {
  constexpr std::string_view op = "linear_bf16_forward";
  static_assert(std::is_same_v<typename W::value_type, bfloat16>,
                "linear_bf16_forward: weight must hold blip2::bfloat16 (convert float weights with "
                "blip2::to_bfloat16; use linear_forward for float weights)");
  static_assert(same_value_type_v<O, I> && same_value_type_v<O, B>,
                "linear_bf16_forward: out, inp and bias must have the same element type");
  static_assert(std::is_floating_point_v<typename O::value_type>,
                "linear_bf16_forward: out, inp and bias must be float (or double)");
  const index_t R = i.extent(0), K = i.extent(1), N = w.extent(0);
  check_shape(op, "out", o, {R, N});  // (R, N)
  check_shape(op, "weight", w, {N, K});
  if (b.data()) check_shape(op, "bias", b, {N});
  BLIP2_DISPATCH(Be, linear_bf16_forward, be, o, i, w, b);
}

}  // namespace detail

// out = inp weight^T + bias, weight in bfloat16
template <backend Be, tensor Out, tensor In, tensor W, tensor Bias>
void linear_bf16_forward(Be& be, Out&& out, In&& inp, W&& weight, Bias&& bias) {
  detail::linear_bf16_forward_checked(be, detail::arg_rows<Be>(out),                      // (R, N)
                                      detail::as_const(detail::arg_rows<Be>(inp)),        // (R, K)
                                      detail::as_const(detail::arg_view<Be, 2>(weight)),  // (N, K) bfloat16
                                      detail::as_const(detail::arg_view<Be, 1>(bias)));   // (N)
}

// out = inp weight^T, weight in bfloat16
template <backend Be, tensor Out, tensor In, tensor W>
void linear_bf16_forward(Be& be, Out&& out, In&& inp, W&& weight) {
  auto o = detail::arg_rows<Be>(out);  // (R, N)
  using T = typename decltype(o)::value_type;
  detail::linear_bf16_forward_checked(be, o, detail::as_const(detail::arg_rows<Be>(inp)),
                                      detail::as_const(detail::arg_view<Be, 2>(weight)),
                                      tensor_view<const T, 1, typename Be::memory_space>{});
}

}  // namespace blip2
