// blip2/nn/softmax.hpp: softmax over the last axis, with an optional additive mask.
//
// Dimensions: R rows (all leading dimensions, flattened), N entries per row.
//   forward:  out(r, :) = softmax(inp(r, :) + mask(r, :)), numerically stable (the row maximum is
//             subtracted first). mask is (R, N) with any strides: a stride of 0 broadcasts it (one key
//             padding row for all queries, one (T, N) pattern for every batch). Masks of BLIP-2 are
//             additive, (1 - m) * -10000 (core/mask_policy.hpp), so a fully masked row stays finite.
//   backward: dinp(r, n) = out(r, n) * (dout(r, n) - sum_j dout(r, j) out(r, j)), assigned or added with
//             grad_write::accumulate. The mask is a constant: it has no gradient.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {
template <class Be, class O, class I, class M>
void softmax_forward_checked(Be& be, O o, I i, M m) {
  constexpr std::string_view op = "softmax_forward";
  static_assert(same_value_type_v<O, I> && same_value_type_v<O, M>,
                "softmax_forward: out, inp and mask must have the same element type");
  const index_t R = i.extent(0), N = i.extent(1);
  check_shape(op, "out", o, {R, N});  // (R, N)
  if (m.data()) check_shape(op, "mask", m, {R, N});
  BLIP2_DISPATCH(Be, softmax_forward, be, o, i, m);
}
}  // namespace detail

// out = softmax(inp) over the last axis
template <backend Be, tensor Out, tensor In>
void softmax_forward(Be& be, Out&& out, In&& inp) {
  auto i = detail::as_const(detail::arg_rows<Be>(inp));  // (R, N)
  using E = typename decltype(i)::element_type;
  detail::softmax_forward_checked(be, detail::arg_rows<Be>(out), i, tensor_view<E, 2, typename Be::memory_space>{});
}

// out = softmax(inp + mask) over the last axis; mask (R, N), any strides (0 broadcasts)
template <backend Be, tensor Out, tensor In, tensor Mask>
void softmax_forward(Be& be, Out&& out, In&& inp, Mask&& mask) {
  detail::softmax_forward_checked(be, detail::arg_rows<Be>(out),                    // (R, N)
                                  detail::as_const(detail::arg_rows<Be>(inp)),      // (R, N)
                                  detail::as_const(detail::arg_view<Be, 2>(mask))); // (R, N)
}

// dinp = out * (dout - rowsum(dout * out)), assigned (default) or accumulated
template <backend Be, tensor DInp, tensor DOut, tensor Out>
void softmax_backward(Be& be, DInp&& dinp, DOut&& dout, Out&& out, grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "softmax_backward";
  auto di = detail::arg_rows<Be>(dinp);                          // (R, N)
  auto dov = detail::as_const(detail::arg_rows<Be>(dout));       // (R, N)
  auto ov = detail::as_const(detail::arg_rows<Be>(out));         // (R, N)
  static_assert(detail::same_value_type_v<decltype(di), decltype(dov)> &&
                    detail::same_value_type_v<decltype(di), decltype(ov)>,
                "softmax_backward: dinp, dout and out must have the same element type");
  const index_t R = ov.extent(0), N = ov.extent(1);
  detail::check_shape(op, "dinp", di, {R, N});
  detail::check_shape(op, "dout", dov, {R, N});
  BLIP2_DISPATCH(Be, softmax_backward, be, di, dov, ov, mode);
}

}  // namespace blip2
