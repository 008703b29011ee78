// blip2/core/buffer.hpp: owning storage in a memory space, the one allocation behind an arena.
//
// buffer<T, Space> is what a state, a weight set or a cache owns; everything else is a view into it.
// The host buffer is a std::vector. A device part (the CUDA backend) specialises buffer for its space
// with its allocator; a space without a specialisation fails to compile at the first buffer it needs.
#pragma once
#include <cstddef>
#include <vector>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <class T, memory_space Space>
class buffer;  // specialised per memory space

template <class T>
class buffer<T, host_space> {
 public:
  using value_type = T;
  using memory_space_type = host_space;
  T* data() { return v_.data(); }
  const T* data() const { return v_.data(); }
  std::size_t size() const { return v_.size(); }
  // at least n elements; the contents are unspecified after a resize (every view is re-bound by the
  // arena and written before it is read)
  void reserve_elements(std::size_t n) {
    if (v_.size() < n) v_.assign(n, T{});
  }

 private:
  std::vector<T> v_;
};

}  // namespace blip2
