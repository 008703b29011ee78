// blip2/nn/matmul.hpp: batched matrix product over strided views.
//
// Dimensions: batch (any leading count folded into one), M rows of A and C, K inner, N columns of B and C.
//   C[b] = alpha * A[b] B[b] + beta * C[b]       A (batch, M, K), B (batch, K, N), C (batch, M, N)
// Operands are views with any strides: a transpose is blip2::transpose(v) (swapped strides, no copy), and
// an A or B whose batch extent is 1 or whose batch stride is 0 is broadcast over C's batch. Rank-2
// operands are one batch. beta == 0 ignores C's prior contents (even NaN); beta == 1 accumulates, which
// is how parameter gradients are added. C must not overlap A or B.
//
// The backward of C = alpha A B is two matmuls (there is no matmul_backward op):
//   dA += alpha dC B^T:  matmul(be, dA, dC, transpose(B), alpha, 1)
//   dB += alpha A^T dC:  matmul(be, dB, transpose(A), dC, alpha, 1)   (summed over batch when B broadcasts)
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {
// A rank-2 view as one batch: (M, K) -> (1, M, K).
template <class T, class S>
tensor_view<T, 3, S> as_batch(const tensor_view<T, 2, S>& v) {
  return {v.data(), {1, v.extent(0), v.extent(1)}, {0, v.stride(0), v.stride(1)}};
}
template <class T, class S>
tensor_view<T, 3, S> as_batch(const tensor_view<T, 3, S>& v) {
  return v;
}
// An operand with batch extent 1 (or stride 0) seen as `batch` copies of its one matrix (stride 0).
template <class T, class S>
tensor_view<T, 3, S> broadcast_batch(const tensor_view<T, 3, S>& v, index_t batch) {
  if (v.extent(0) != 1 && v.stride(0) != 0) return v;
  return {v.data(), {batch, v.extent(1), v.extent(2)}, {0, v.stride(1), v.stride(2)}};
}
}  // namespace detail

template <backend Be, tensor CT, tensor AT, tensor BT>
void matmul(Be& be, CT&& c, AT&& a, BT&& b, double alpha = 1.0, double beta = 0.0) {
  constexpr std::string_view op = "matmul";
  auto cv0 = view(c);
  auto av0 = view(a);
  auto bv0 = view(b);
  constexpr std::size_t rank = decltype(cv0)::rank;
  static_assert(rank == 2 || rank == 3, "matmul: operands must be rank 2 (M, K) or rank 3 (batch, M, K)");
  static_assert(decltype(av0)::rank == rank && decltype(bv0)::rank == rank,
                "matmul: A, B and C must have the same rank");
  static_assert(detail::same_value_type_v<decltype(cv0), decltype(av0)> &&
                    detail::same_value_type_v<decltype(cv0), decltype(bv0)>,
                "matmul: A, B and C must have the same element type");
  auto cv = detail::as_batch(detail::arg_view<Be, rank>(cv0));                       // (batch, M, N)
  const index_t batch = cv.extent(0), M = cv.extent(1), N = cv.extent(2);
  auto av = detail::broadcast_batch(detail::as_const(detail::as_batch(detail::arg_view<Be, rank>(av0))), batch);
  auto bv = detail::broadcast_batch(detail::as_const(detail::as_batch(detail::arg_view<Be, rank>(bv0))), batch);
  const index_t K = av.extent(2);                                                    // A (batch, M, K)
  detail::check_shape(op, "A", av, {batch, M, K});
  detail::check_shape(op, "B", bv, {batch, K, N});                                   // B (batch, K, N)
  for (std::size_t d = 0; d < 3; ++d)
    BLIP2_CHECK(cv.extent(d) <= 1 || cv.stride(d) != 0, shape_error, op, ": C of shape ", shape_string(cv),
                " has a zero stride in dimension ", d, ": C cannot be broadcast");
  using T = typename decltype(cv)::value_type;
  BLIP2_DISPATCH(Be, matmul, be, cv, av, bv, static_cast<T>(alpha), static_cast<T>(beta));
}

}  // namespace blip2
