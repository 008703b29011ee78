// blip2/backend/reference/relu.hpp: ReLU kernels of the reference backend.
// Dimensions: R rows, C columns (any tensor, seen as rows). Arguments are checked by nn/relu.hpp.
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/backend/reference/elementwise.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::relu_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp) {
    detail::map_elements(out, inp, [](T x) { return x > T(0) || x != x ? x : T(0); });  // NaN passes through
  }
};

template <>
struct kernel<reference_backend, op::relu_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> inp, grad_write mode) {
    // forward: out = max(inp, 0); dinp = dout where inp > 0
    detail::map_gradients(dinp, dout, inp, mode, [](T d, T x) { return x > T(0) ? d : T(0); });
  }
};

}  // namespace blip2
