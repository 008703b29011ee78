// blip2/nn/copy_to_host.hpp: host_dst = src, from the backend's memory to a host view of the same shape
// (rank <= 4, any strides): how host-only steps (sampling, targets, metrics) get their small copies.
// On a host backend it is a copy.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <backend Be, tensor HostDst, tensor Src>
void copy_to_host(Be& be, HostDst&& host_dst, Src&& src) {
  auto d = view(host_dst);
  auto s = detail::as_const(detail::arg_view<Be, view_t<Src>::rank>(src));
  static_assert(std::is_same_v<typename decltype(d)::memory_space_type, host_space>,
                "copy_to_host: host_dst must be in host memory");
  detail::check_copy("copy_to_host", "host_dst", d, s);
  BLIP2_DISPATCH(Be, copy_to_host, be, detail::as_rank4(d), detail::as_rank4(s));
}

}  // namespace blip2
