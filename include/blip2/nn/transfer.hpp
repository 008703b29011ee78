// blip2/nn/transfer.hpp: tensors moved between the host and a backend's memory, for programs and tests
// written once for every backend (on a host backend each move is a plain copy).
//   auto img = blip2::to_backend_memory(be, host_view);        // owns its copy; img.view() for the kernels
//   host_tensor<float, 2> out = blip2::to_host(be, device_view);  // a dense host copy
#pragma once
#include <type_traits>

#include "blip2/core/buffer.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"

namespace blip2 {

// A dense tensor that owns its storage in memory space Space (host_tensor's counterpart for any space).
// The contents are unspecified until written.
template <class T, std::size_t R, memory_space Space>
class space_tensor {
 public:
  explicit space_tensor(const extents_t<R>& e) : e_(e) {
    index_t n = 1;
    for (index_t x : e) n *= x;
    storage_.reserve_elements(static_cast<std::size_t>(n));
  }
  tensor_view<T, R, Space> view() { return {storage_.data(), e_}; }
  tensor_view<const T, R, Space> view() const { return {storage_.data(), e_}; }
  const extents_t<R>& extents() const { return e_; }

 private:
  buffer<T, Space> storage_;
  extents_t<R> e_;
};

// A copy of host data in be's memory.
template <backend Be, class T, std::size_t R>
space_tensor<std::remove_const_t<T>, R, typename Be::memory_space> to_backend_memory(Be& be, tensor_view<T, R> host) {
  space_tensor<std::remove_const_t<T>, R, typename Be::memory_space> t(host.extents());
  copy_from_host(be, t.view(), tensor_view<const T, R>(host));
  return t;
}

// A dense host copy of a view in be's memory.
template <backend Be, class T, std::size_t R>
host_tensor<std::remove_const_t<T>, R> to_host(Be& be, tensor_view<T, R, typename Be::memory_space> v) {
  host_tensor<std::remove_const_t<T>, R> out(v.extents());
  copy_to_host(be, out.view(), tensor_view<const T, R, typename Be::memory_space>(v));
  return out;
}

}  // namespace blip2
