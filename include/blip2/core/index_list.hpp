// blip2/core/index_list.hpp: a list of indices computed on the host (which rows a pass computes, token
// ids, the image of each pair) that kernels read in the backend's memory.
//
// On a host space the kernels read the host vector itself; on a device space upload() copies it once
// (copy_from_host, one call per list and pass) and view() is the device copy.
#pragma once
#include <vector>

#include "blip2/core/buffer.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/nn/copy_from_host.hpp"

namespace blip2 {

template <memory_space Space = host_space>
class index_list {
 public:
  std::vector<index_t> host;  // filled on the host, then upload()

  index_t size() const { return static_cast<index_t>(host.size()); }
  template <backend Be>
  void upload(Be& be) {
    if constexpr (!Space::host_accessible) {
      device_.reserve_elements(host.size());
      copy_from_host(be, tensor_view<index_t, 1, Space>(device_.data(), {size()}),
                     tensor_view<const index_t, 1>(host.data(), {size()}));
    } else {
      (void)be;
    }
  }
  // elements [i0, i1) in the backend's memory
  tensor_view<const index_t, 1, Space> view(index_t i0, index_t i1) const {
    if constexpr (Space::host_accessible)
      return {host.data() + i0, {i1 - i0}};
    else
      return {device_.data() + i0, {i1 - i0}};
  }
  tensor_view<const index_t, 1, Space> view() const { return view(0, size()); }

 private:
  buffer<index_t, Space> device_;  // device spaces only
};

}  // namespace blip2
