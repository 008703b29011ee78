// blip2/nn/row_max.hpp: the max of each row and where it is, forward and backward (ITC's max over the
// queries of the query-text similarities).
//
// Dimensions: R rows (B B image-text pairs in ITC), N columns (Q queries), N >= 1.
//   forward:  max[r] = max_c inp[r, c], argmax[r] = the first c that attains it (like torch.max(dim));
//             a NaN in a row propagates: max = NaN, argmax = the index of the first NaN
//   backward: dinp[r, argmax[r]] gets dmax[r]; the other elements are 0 (assign) or left as they are
//             (grad_write::accumulate)
// argmax (int64, blip2::index_t) is the cache backward needs.
#pragma once
#include <type_traits>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Max, class Argmax, class In>
void row_max_forward(Be& be, Max&& max, Argmax&& argmax, In&& inp) {
  constexpr std::string_view op = "row_max_forward";
  auto m = detail::arg_view<Be, 1>(max);                      // (R)
  auto a = detail::arg_view<Be, 1>(argmax);                   // (R)
  auto i = detail::as_const(detail::arg_view<Be, 2>(inp));    // (R, N)
  static_assert(detail::same_value_type_v<decltype(m), decltype(i)>, "row_max_forward: max and inp differ in type");
  static_assert(std::is_same_v<typename decltype(a)::element_type, index_t>,
                "row_max_forward: argmax must be a writable int64 (blip2::index_t) tensor");
  const index_t R = i.extent(0), N = i.extent(1);
  BLIP2_CHECK(N >= 1 || R == 0, shape_error, op, ": inp has shape ", shape_string(i),
              "; the max of an empty row is undefined");
  detail::check_shape(op, "max", m, {R});
  detail::check_shape(op, "argmax", a, {R});
  BLIP2_DISPATCH(Be, row_max_forward, be, m, a, i);
}

template <backend Be, class DInp, class DMax, class Argmax>
void row_max_backward(Be& be, DInp&& dinp, DMax&& dmax, Argmax&& argmax, grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "row_max_backward";
  auto di = detail::arg_view<Be, 2>(dinp);                    // (R, N)
  auto dm = detail::as_const(detail::arg_view<Be, 1>(dmax));  // (R)
  auto a = detail::as_const(detail::arg_view<Be, 1>(argmax)); // (R)
  static_assert(detail::same_value_type_v<decltype(di), decltype(dm)>,
                "row_max_backward: dinp and dmax differ in type");
  static_assert(std::is_same_v<typename decltype(a)::value_type, index_t>,
                "row_max_backward: argmax must be int64 (blip2::index_t)");
  const index_t R = di.extent(0), N = di.extent(1);
  detail::check_shape(op, "dmax", dm, {R});
  detail::check_shape(op, "argmax", a, {R});
  if constexpr (Be::memory_space::host_accessible)
    for (index_t r = 0; r < R; ++r)
      BLIP2_CHECK(a(r) >= 0 && a(r) < N, value_error, op, ": argmax(", r, ") = ", a(r),
                  " is outside [0, N) with N = ", N);
  BLIP2_DISPATCH(Be, row_max_backward, be, di, dm, a, mode);
}

}  // namespace blip2
