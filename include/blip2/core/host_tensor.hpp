// blip2/core/host_tensor.hpp: a small owning host tensor for examples and tests.
//
// Row-major, value-initialised, copyable. The library's kernels never take it directly: they take
// tensor_view, and blip2::view(t) (or t.view()) makes one. Real models keep their buffers in arenas.
#pragma once
#include <algorithm>
#include <initializer_list>
#include <vector>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <class T, std::size_t Rank>
class host_tensor {
 public:
  using value_type = T;
  static constexpr std::size_t rank = Rank;

  host_tensor() = default;
  explicit host_tensor(const extents_t<Rank>& shape, T fill = T{}) : shape_(shape) {
    index_t n = 1;
    for (index_t e : shape) {
      BLIP2_CHECK(e >= 0, shape_error, "host_tensor: negative extent in ", shape_string<Rank>(shape));
      n *= e;
    }
    data_.assign(static_cast<std::size_t>(n), fill);
  }

  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  const extents_t<Rank>& shape() const { return shape_; }
  index_t extent(std::size_t i) const { return shape_[i]; }
  index_t size() const { return static_cast<index_t>(data_.size()); }

  tensor_view<T, Rank> view() { return {data_.data(), shape_}; }
  tensor_view<const T, Rank> view() const { return {data_.data(), shape_}; }

  template <class... I>
  T& operator()(I... i) {
    return view()(i...);
  }
  template <class... I>
  const T& operator()(I... i) const {
    return view()(i...);
  }
  T& operator[](index_t i) { return data_[static_cast<std::size_t>(i)]; }
  const T& operator[](index_t i) const { return data_[static_cast<std::size_t>(i)]; }

  void fill(T v) { std::fill(data_.begin(), data_.end(), v); }
  std::vector<T>& storage() { return data_; }
  const std::vector<T>& storage() const { return data_; }

 private:
  extents_t<Rank> shape_{};
  std::vector<T> data_;
};

}  // namespace blip2
