// blip2/core/arena.hpp: one allocation carved into many views (llm.c's "one malloc, a struct of pointers").
//
// A layout function assigns every view of a state struct from a carver; lay_out() calls it twice: once to
// count (views get a null base), then, after one resize of the storage, to bind. Kernels never allocate:
// the arena is sized when the shapes change, outside any kernel. The storage is a std::vector (host) or
// a buffer<T, Space> (core/buffer.hpp); the views carry the storage's memory space.
//
//   lay_out(storage, [&](auto& a) { st.q = a.template take<2>({R, C}); st.mean = a.template take<1>({R}); });
#pragma once
#include <vector>

#include "blip2/core/buffer.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
class carver {
 public:
  explicit carver(T* base) : base_(base) {}
  // The next n elements as a dense view of the given extents (aligned to 16 elements: 64 bytes for float).
  template <std::size_t R>
  tensor_view<T, R, Space> take(const extents_t<R>& e) {
    index_t n = 1;
    for (index_t x : e) n *= x;
    tensor_view<T, R, Space> v(base_ ? base_ + used_ : nullptr, e);
    used_ += (n + 15) / 16 * 16;
    return v;
  }
  index_t used() const { return used_; }

 private:
  T* base_;
  index_t used_ = 0;
};

// Size storage for layout and bind the views; returns the number of elements used.
template <class T, class Layout>
index_t lay_out(std::vector<T>& storage, Layout&& layout) {
  carver<T> counter(nullptr);
  layout(counter);
  if (static_cast<index_t>(storage.size()) < counter.used()) storage.assign(static_cast<std::size_t>(counter.used()), T{});
  carver<T> binder(storage.data());
  layout(binder);
  return binder.used();
}
template <class T, memory_space Space, class Layout>
index_t lay_out(buffer<T, Space>& storage, Layout&& layout) {
  carver<T, Space> counter(nullptr);
  layout(counter);
  storage.reserve_elements(static_cast<std::size_t>(counter.used()));
  carver<T, Space> binder(storage.data());
  layout(binder);
  return binder.used();
}

}  // namespace blip2
