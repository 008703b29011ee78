// blip2/nn/copy.hpp: dst = src for views of any strides: a layout change (batch-major <-> sequence-major,
// a gather of rows) without a hand-written loop at the call site.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/backend/reference/copy.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Dst, class Src>
void copy(Be& be, Dst&& dst, Src&& src) {
  auto d = view(dst);
  auto s = detail::as_const(view(src));
  static_assert(decltype(d)::rank == decltype(s)::rank && decltype(d)::rank <= 4, "copy: ranks differ or exceed 4");
  static_assert(detail::same_value_type_v<decltype(d), decltype(s)>, "copy: element types differ");
  static_assert(std::is_same_v<typename decltype(d)::memory_space_type, typename Be::memory_space> &&
                    std::is_same_v<typename decltype(s)::memory_space_type, typename Be::memory_space>,
                "copy: a view's memory space differs from the backend's");
  detail::check_shape("copy", "dst", d, s.extents());
  // as rank 4, leading extents 1
  using T = typename decltype(d)::value_type;
  constexpr std::size_t R = decltype(d)::rank;
  extents_t<4> e{1, 1, 1, 1}, ds{0, 0, 0, 0}, ss{0, 0, 0, 0};
  for (std::size_t i = 0; i < R; ++i) {
    e[4 - R + i] = d.extent(i);
    ds[4 - R + i] = d.stride(i);
    ss[4 - R + i] = s.stride(i);
  }
  BLIP2_DISPATCH(Be, copy, be, tensor_view<T, 4, typename Be::memory_space>(d.data(), e, ds),
                 tensor_view<const T, 4, typename Be::memory_space>(s.data(), e, ss));
}

}  // namespace blip2
