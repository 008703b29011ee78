// blip2/nn/fill.hpp: dst = value for a view of any strides (rank <= 4) in the backend's memory: zeroing
// gradients and buffers without a host loop, so it works for device memory too.
#pragma once
#include <concepts>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, tensor Dst, class V>
void fill(Be& be, Dst&& dst, const V& value) {
  auto d = detail::arg_view<Be, view_t<Dst>::rank>(dst);  // any shape, rank <= 4
  using T = typename decltype(d)::value_type;
  static_assert(!std::is_const_v<typename decltype(d)::element_type>, "fill: dst is read-only");
  static_assert(std::convertible_to<const V&, T>, "fill: value is not convertible to dst's element type");
  BLIP2_DISPATCH(Be, fill, be, detail::as_rank4(d), static_cast<T>(value));
}

}  // namespace blip2
