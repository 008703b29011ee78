// blip2/backend/reference/dropout.hpp: seeded dropout kernels of the reference backend, and the
// keep rule that every dropout in the library shares (this op and attention's dropout on its probs).
//
// THE RULE: the element with flat row-major index i (of the logical tensor, whatever its strides) is
// kept iff uniform_float(seed, i) >= float(p) (the comparison in float, so a float and a double kernel
// drop the same elements); a kept element is multiplied by 1 / (1 - p) in the kernel's precision, a
// dropped one is exactly 0 (also when the input is NaN or Inf, where PyTorch's multiply-by-mask would
// give NaN). p == 0 keeps everything and scales by 1. No mask is stored: backward draws it again, and
// since a draw depends on (seed, i) only, the mask is the same whatever the thread count or loop order.
// Dimensions: R rows, C columns (index i = r C + c). Arguments are checked by the public op (blip2::dropout_*).
#pragma once
#include <cstdint>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/rng.hpp"

namespace blip2 {

// Whether element i survives dropout with probability p of being dropped. The comparison is in float on
// purpose: the decision is the same in a float and a double kernel.
constexpr bool dropout_keep(std::uint64_t seed, std::uint64_t i, double p) {
  return uniform_float(seed, i) >= static_cast<float>(p);
}

// The scale of a kept element, 1 / (1 - p), in the kernel's precision.
template <class T>
constexpr T dropout_scale(double p) {
  return T(1) / (T(1) - static_cast<T>(p));
}

template <>
struct kernel<reference_backend, op::dropout_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp, double p,
                  std::uint64_t seed) {
    const index_t R = inp.extent(0), C = inp.extent(1);
    const T scale = dropout_scale<T>(p);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) {
        const auto i = static_cast<std::uint64_t>(r * C + c);
        out(r, c) = (p == 0.0 || dropout_keep(seed, i, p)) ? inp(r, c) * scale : T(0);
      }
  }
};

template <>
struct kernel<reference_backend, op::dropout_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout, double p,
                  std::uint64_t seed, grad_write mode) {
    const index_t R = dout.extent(0), C = dout.extent(1);
    const T scale = dropout_scale<T>(p);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) {
        const auto i = static_cast<std::uint64_t>(r * C + c);
        // forward: out = keep(seed, i) ? inp * scale : 0 (the same mask, drawn again)
        const T g = (p == 0.0 || dropout_keep(seed, i, p)) ? dout(r, c) * scale : T(0);
        dinp(r, c) = (mode == grad_write::accumulate ? dinp(r, c) : T(0)) + g;
      }
  }
};

}  // namespace blip2
