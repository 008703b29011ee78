// blip2/backend/reference/gelu.hpp: exact (erf) GELU kernels of the reference backend.
// Dimensions: R rows, C columns (any tensor, seen as rows). Arguments are checked by the public op (blip2::gelu_*).
#pragma once
#include <cmath>

#include "blip2/backend/reference/base.hpp"
#include "blip2/backend/reference/elementwise.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {
// gelu(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
template <class T>
T gelu_value(T x) {
  constexpr T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  return T(0.5) * x * (T(1) + std::erf(x * inv_sqrt2));
}
// gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
template <class T>
T gelu_derivative(T x) {
  constexpr T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  constexpr T inv_sqrt_2pi = static_cast<T>(0.39894228040143267794);
  const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
  const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x * x);
  return cdf + x * pdf;
}
}  // namespace detail

template <>
struct kernel<reference_backend, op::gelu_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp) {
    detail::map_elements(out, inp, [](T x) { return detail::gelu_value(x); });
  }
};

template <>
struct kernel<reference_backend, op::gelu_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> inp, grad_write mode) {
    // forward: out = 0.5 inp (1 + erf(inp / sqrt 2)); dinp = dout * gelu'(inp)
    detail::map_gradients(dinp, dout, inp, mode, [](T d, T x) { return d * detail::gelu_derivative(x); });
  }
};

}  // namespace blip2
