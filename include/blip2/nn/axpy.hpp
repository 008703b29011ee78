// blip2/nn/axpy.hpp: y += alpha * x, the residual connection and its gradient.
//
// Dimensions: R rows (leading dimensions flattened), C columns; x and y have the same shape.
// A residual block out = f(x) + x is f's output followed by axpy(out, x, 1); its backward passes dout to
// f unchanged and adds it to dx with axpy(dx, dout, 1). y is read and written: an accumulation.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Y, class X>
void axpy(Be& be, Y&& y, X&& x, double alpha = 1.0) {
  auto yv = detail::arg_rows<Be>(y);                    // (R, C)
  auto xv = detail::as_const(detail::arg_rows<Be>(x));  // (R, C)
  static_assert(detail::same_value_type_v<decltype(yv), decltype(xv)>, "axpy: x and y must have the same element type");
  detail::check_shape("axpy", "x", xv, yv.extents());
  using T = typename decltype(yv)::value_type;
  BLIP2_DISPATCH(Be, axpy, be, yv, xv, static_cast<T>(alpha));
}

}  // namespace blip2
