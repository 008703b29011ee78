// blip2/backend/reference/linear_bf16.hpp: the reference kernel of linear_bf16_forward (nn/linear_bf16.hpp).
// Dimensions: R rows, K input features, N output features. Arguments are checked by the public op; an
// empty bias view means "no bias". Each weight is widened exactly (to_float) and the sum runs in T, in
// order of k, from the bias: the loop of reference/linear.hpp with a bfloat16 weight. Any strides.
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/bfloat16.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::linear_bf16_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const bfloat16, 2> weight, tensor_view<const T, 1> bias) {
    const index_t R = inp.extent(0), K = inp.extent(1), N = weight.extent(0);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      for (index_t n = 0; n < N; ++n) {
        T acc = bias.data() ? bias(n) : T(0);
        for (index_t k = 0; k < K; ++k) acc += inp(r, k) * static_cast<T>(to_float(weight(n, k)));
        out(r, n) = acc;
      }
    }
  }
};

}  // namespace blip2
