// blip2/nn/copy.hpp: dst = src for views of any strides: a layout change (batch-major <-> sequence-major,
// a gather of rows) without a hand-written loop at the call site.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, class Dst, class Src>
void copy(Be& be, Dst&& dst, Src&& src) {
  auto d = view(dst);
  auto s = detail::as_const(view(src));
  static_assert(std::is_same_v<typename decltype(d)::memory_space_type, typename Be::memory_space> &&
                    std::is_same_v<typename decltype(s)::memory_space_type, typename Be::memory_space>,
                "copy: a view's memory space differs from the backend's");
  detail::check_copy("copy", "dst", d, s);
  BLIP2_DISPATCH(Be, copy, be, detail::as_rank4(d), detail::as_rank4(s));  // as rank 4, leading extents 1
}

}  // namespace blip2
