// blip2/nn/linear.hpp: the fully connected layer (Hugging Face / PyTorch nn.Linear layout).
//
// Dimensions: R rows (all leading dimensions of the input, flattened: (B, T, K) is fine), K input
// features, N output features.
//   forward:  out = inp weight^T + bias           out (R, N), inp (R, K), weight (N, K), bias (N)
//   backward: dinp  = dout weight   (assigned, or added with grad_write::accumulate)
//             dweight += dout^T inp (always accumulated: parameter gradient)
//             dbias   += sum over rows of dout (always accumulated)
//             An empty view (data() == nullptr) for any of the three means "not needed": its work is
//             skipped and no scratch is made for it. A frozen layer passes empty dweight and dbias.
// Each has an overload without bias / dbias.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {

template <class Be, class O, class I, class W, class B>
void linear_forward_checked(Be& be, O o, I i, W w, B b) {
  constexpr std::string_view op = "linear_forward";
  static_assert(same_value_type_v<O, I> && same_value_type_v<O, W> && same_value_type_v<O, B>,
                "linear_forward: out, inp, weight and bias must have the same element type");
  const index_t R = i.extent(0), K = i.extent(1), N = w.extent(0);
  check_shape(op, "out", o, {R, N});  // (R, N)
  check_shape(op, "weight", w, {N, K});
  if (b.data()) check_shape(op, "bias", b, {N});
  BLIP2_DISPATCH(Be, linear_forward, be, o, i, w, b);
}

template <class Be, class DI, class DW, class DB, class DO, class I, class W>
void linear_backward_checked(Be& be, DI di, DW dw, DB db, DO dout, I i, W w, grad_write mode) {
  constexpr std::string_view op = "linear_backward";
  static_assert(same_value_type_v<DW, DI> && same_value_type_v<DW, DB> && same_value_type_v<DW, DO> &&
                    same_value_type_v<DW, I> && same_value_type_v<DW, W>,
                "linear_backward: all tensors must have the same element type");
  const index_t R = i.extent(0), K = i.extent(1), N = w.extent(0);
  if (di.data()) check_shape(op, "dinp", di, {R, K});
  if (dw.data()) check_shape(op, "dweight", dw, {N, K});
  if (db.data()) check_shape(op, "dbias", db, {N});
  check_shape(op, "dout", dout, {R, N});
  check_shape(op, "weight", w, {N, K});
  BLIP2_DISPATCH(Be, linear_backward, be, di, dw, db, dout, i, w, mode);
}

}  // namespace detail

// out = inp weight^T + bias
template <backend Be, tensor Out, tensor In, tensor W, tensor Bias>
void linear_forward(Be& be, Out&& out, In&& inp, W&& weight, Bias&& bias) {
  detail::linear_forward_checked(be, detail::arg_rows<Be>(out),                      // (R, N)
                                 detail::as_const(detail::arg_rows<Be>(inp)),        // (R, K)
                                 detail::as_const(detail::arg_view<Be, 2>(weight)),  // (N, K)
                                 detail::as_const(detail::arg_view<Be, 1>(bias)));   // (N)
}

// out = inp weight^T
template <backend Be, tensor Out, tensor In, tensor W>
void linear_forward(Be& be, Out&& out, In&& inp, W&& weight) {
  auto w = detail::as_const(detail::arg_view<Be, 2>(weight));  // (N, K)
  using T = typename decltype(w)::element_type;
  detail::linear_forward_checked(be, detail::arg_rows<Be>(out), detail::as_const(detail::arg_rows<Be>(inp)), w,
                                 tensor_view<T, 1, typename Be::memory_space>{});
}

// dinp = dout weight (or += with grad_write::accumulate), dweight += dout^T inp, dbias += column sums of
// dout; each skipped when its view is empty (frozen: empty dweight and dbias)
template <backend Be, tensor DInp, tensor DW, tensor DB, tensor DOut, tensor In, tensor W>
void linear_backward(Be& be, DInp&& dinp, DW&& dweight, DB&& dbias, DOut&& dout, In&& inp, W&& weight,
                     grad_write mode = grad_write::assign) {
  detail::linear_backward_checked(be, detail::arg_rows<Be>(dinp),                        // (R, K)
                                  detail::arg_view<Be, 2>(dweight),                      // (N, K)
                                  detail::arg_view<Be, 1>(dbias),                        // (N)
                                  detail::as_const(detail::arg_rows<Be>(dout)),          // (R, N)
                                  detail::as_const(detail::arg_rows<Be>(inp)),           // (R, K)
                                  detail::as_const(detail::arg_view<Be, 2>(weight)),     // (N, K)
                                  mode);
}

// The same without a bias.
template <backend Be, tensor DInp, tensor DW, tensor DOut, tensor In, tensor W>
void linear_backward(Be& be, DInp&& dinp, DW&& dweight, DOut&& dout, In&& inp, W&& weight,
                     grad_write mode = grad_write::assign) {
  auto dw = detail::arg_view<Be, 2>(dweight);  // (N, K)
  using T = typename decltype(dw)::element_type;
  detail::linear_backward_checked(be, detail::arg_rows<Be>(dinp), dw, tensor_view<T, 1, typename Be::memory_space>{},
                                  detail::as_const(detail::arg_rows<Be>(dout)),
                                  detail::as_const(detail::arg_rows<Be>(inp)),
                                  detail::as_const(detail::arg_view<Be, 2>(weight)), mode);
}

}  // namespace blip2
