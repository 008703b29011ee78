// blip2/backend/onednn/linear.hpp: linear through oneDNN's matmul primitive.
//
// forward:  out = inp weight^T + bias is one matmul with a bias input; weight^T is the (K, N) view of
//           weight with swapped strides (no copy).
// backward: dinp = dout weight (beta 0, or beta 1 to accumulate), dweight += dout^T inp (beta 1: the sum
//           post-op adds into the gradient), dbias += column sums of dout (a loop).
// Dimensions: R rows, K input features, N output features.
#pragma once
#include <algorithm>
#include "blip2/backend/onednn/matmul.hpp"
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/linear.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::linear_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const T, 2> weight, tensor_view<const T, 1> bias) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::linear_forward>::run(be, out, inp, weight, bias);  // double: reference
    } else if (!onednn_detail::matmul_fits(out, inp, transpose(weight)) ||
               (bias.data() && bias.extent(0) > 1 && bias.stride(0) <= 0)) {
      // zero or negative strides inside a matrix, or a broadcast bias: no oneDNN descriptor for them
      reference_fallback<op::linear_forward>::run(be, out, inp, weight, bias);
    } else {
      // out (R, N) = inp (R, K) @ weight^T (K, N) + bias (1, N)
      onednn_detail::run_matmul<2>(be, out, inp, transpose(weight), 1.0f, 0.0f, bias.data(),
                                   bias.data() ? bias.stride(0) : 1);
    }
  }
};

template <>
struct kernel<onednn_backend, op::linear_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<T, 2> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 2> weight,
                  grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::linear_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mode);  // double
    } else if ((dinp.data() && !onednn_detail::matmul_fits(dinp, dout, weight)) ||
               !onednn_detail::matmul_fits(dweight, transpose(dout), inp)) {
      // zero or negative strides inside a matrix: no oneDNN descriptor for them
      reference_fallback<op::linear_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mode);
    } else {
      const index_t R = inp.extent(0), N = weight.extent(0);
      // forward: out = inp weight^T + bias
      // dinp (R, K) = dout (R, N) @ weight (N, K), assigned (beta 0) or accumulated (beta 1)
      if (dinp.data())
        onednn_detail::run_matmul<2>(be, dinp, dout, weight, 1.0f, mode == grad_write::accumulate ? 1.0f : 0.0f);
      // dweight (N, K) += dout^T (N, R) @ inp (R, K)
      onednn_detail::run_matmul<2>(be, dweight, transpose(dout), inp, 1.0f, 1.0f);
      // dbias (N) += sum over rows of dout: output features are independent. Blocks of columns, the rows
      // walked in order inside a block (contiguous reads; each column still sums its rows in row order).
      if (dbias.data()) {
        constexpr index_t block = 64;
        BLIP2_OMP_FOR
        for (index_t n0 = 0; n0 < N; n0 += block) {
          const index_t nb = std::min(block, N - n0);
          float acc[block] = {};
          for (index_t r = 0; r < R; ++r)
            for (index_t n = 0; n < nb; ++n) acc[n] += dout(r, n0 + n);
          for (index_t n = 0; n < nb; ++n) dbias(n0 + n) += acc[n];
        }
      }
    }
  }
};

}  // namespace blip2
