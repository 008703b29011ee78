// blip2/backend/reference/elementwise.hpp: the two loops every elementwise activation kernel of the
// reference backend is made of. Dimensions: R rows, C columns (any tensor, seen as rows).
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2::detail {

// out(r, c) = f(inp(r, c))
template <class T, class F>
void map_elements(tensor_view<T, 2> out, tensor_view<const T, 2> inp, F f) {
  const index_t R = inp.extent(0), C = inp.extent(1);
  BLIP2_OMP_FOR
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < C; ++c) out(r, c) = f(inp(r, c));
}

// dinp(r, c) = g(dout(r, c), inp(r, c)), assigned, or added with grad_write::accumulate
template <class T, class G>
void map_gradients(tensor_view<T, 2> dinp, tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, grad_write mode,
                   G g) {
  const index_t R = inp.extent(0), C = inp.extent(1);
  BLIP2_OMP_FOR
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < C; ++c) {
      const T d = g(dout(r, c), inp(r, c));
      dinp(r, c) = (mode == grad_write::accumulate ? dinp(r, c) : T(0)) + d;
    }
}

}  // namespace blip2::detail
