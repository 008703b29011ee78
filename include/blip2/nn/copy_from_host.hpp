// blip2/nn/copy_from_host.hpp: dst = host_src, from a host view to a view of the same shape (rank <= 4,
// any strides) in the backend's memory: how inputs made on the host (ids, masks, targets) reach a
// backend. On a host backend it is a copy.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, tensor Dst, tensor HostSrc>
void copy_from_host(Be& be, Dst&& dst, HostSrc&& host_src) {
  auto d = detail::arg_view<Be, view_t<Dst>::rank>(dst);
  auto s = detail::as_const(view(host_src));
  static_assert(std::is_same_v<typename decltype(s)::memory_space_type, host_space>,
                "copy_from_host: host_src must be in host memory");
  detail::check_copy("copy_from_host", "dst", d, s);
  BLIP2_DISPATCH(Be, copy_from_host, be, detail::as_rank4(d), detail::as_rank4(s));
}

}  // namespace blip2
