// blip2/core/tensor_view.hpp: the one non-owning tensor type that every kernel takes.
//
// tensor_view<T, Rank, Space> = pointer + extents + strides (in elements), row-major by default, like
// std::mdspan with a strided layout. Transposes and broadcasts are just other strides (a stride of 0
// repeats a row), so kernels accept them without copies. The memory space is part of the type.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "blip2/core/errors.hpp"
#include "blip2/core/memory_space.hpp"

namespace blip2 {

using index_t = std::int64_t;

template <std::size_t Rank>
using extents_t = std::array<index_t, Rank>;

template <std::size_t Rank>
constexpr extents_t<Rank> row_major_strides(const extents_t<Rank>& extents) {
  extents_t<Rank> strides{};
  index_t s = 1;
  for (std::size_t i = Rank; i-- > 0;) {
    strides[i] = s;
    s *= extents[i];
  }
  return strides;
}

template <class T, std::size_t Rank, memory_space Space = host_space>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space_type = Space;
  static constexpr std::size_t rank = Rank;

  constexpr tensor_view() = default;
  constexpr tensor_view(T* data, const extents_t<Rank>& extents)
      : data_(data), extents_(extents), strides_(row_major_strides<Rank>(extents)) {}
  constexpr tensor_view(T* data, const extents_t<Rank>& extents, const extents_t<Rank>& strides)
      : data_(data), extents_(extents), strides_(strides) {}
  // tensor_view<float> converts to tensor_view<const float>, never the other way or across spaces.
  template <class U>
    requires(!std::is_same_v<U, T> && std::is_convertible_v<U (*)[], T (*)[]>)
  constexpr tensor_view(const tensor_view<U, Rank, Space>& other)
      : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

  constexpr T* data() const { return data_; }
  constexpr const extents_t<Rank>& extents() const { return extents_; }
  constexpr const extents_t<Rank>& strides() const { return strides_; }
  constexpr index_t extent(std::size_t i) const { return extents_[i]; }
  constexpr index_t stride(std::size_t i) const { return strides_[i]; }
  constexpr index_t size() const {
    index_t n = 1;
    for (index_t e : extents_) n *= e;
    return n;
  }
  constexpr bool empty() const { return size() == 0; }
  // True when the elements are dense and row-major (extent-1 dimensions may have any stride).
  constexpr bool is_contiguous() const {
    index_t s = 1;
    for (std::size_t i = Rank; i-- > 0;) {
      if (extents_[i] != 1 && strides_[i] != s) return false;
      s *= extents_[i];
    }
    return true;
  }

  template <class... I>
    requires(sizeof...(I) == Rank && (std::is_integral_v<I> && ...))
  constexpr T& operator()(I... idx) const {
    static_assert(Space::host_accessible,
                  "blip2::tensor_view: elements of a device view cannot be read on the host; copy it first");
    const std::array<index_t, Rank> i{static_cast<index_t>(idx)...};
    index_t off = 0;
    for (std::size_t d = 0; d < Rank; ++d) off += i[d] * strides_[d];
    return data_[off];
  }

 private:
  T* data_ = nullptr;
  extents_t<Rank> extents_{};
  extents_t<Rank> strides_{};
};

template <class X>
struct is_tensor_view : std::false_type {};
template <class T, std::size_t R, class S>
struct is_tensor_view<tensor_view<T, R, S>> : std::true_type {};
template <class X>
inline constexpr bool is_tensor_view_v = is_tensor_view<std::remove_cvref_t<X>>::value;

// "(2, 7, 13)": how shapes appear in error messages.
template <std::size_t Rank>
std::string shape_string(const extents_t<Rank>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < Rank; ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + ")";
}
template <class T, std::size_t R, class S>
std::string shape_string(const tensor_view<T, R, S>& v) {
  return shape_string<R>(v.extents());
}

// ---- reshaping helpers (no copies) ----

// Swap two dimensions: a transpose is a view with exchanged strides.
template <class T, std::size_t R, class S>
constexpr tensor_view<T, R, S> transpose(const tensor_view<T, R, S>& v, std::size_t a = R - 2,
                                         std::size_t b = R - 1) {
  auto e = v.extents();
  auto s = v.strides();
  std::swap(e[a], e[b]);
  std::swap(s[a], s[b]);
  return {v.data(), e, s};
}

// v[i] along the first dimension: rank R-1.
template <class T, std::size_t R, class S>
  requires(R >= 1)
constexpr tensor_view<T, R - 1, S> slice(const tensor_view<T, R, S>& v, index_t i) {
  extents_t<R - 1> e{};
  extents_t<R - 1> s{};
  for (std::size_t d = 1; d < R; ++d) {
    e[d - 1] = v.extent(d);
    s[d - 1] = v.stride(d);
  }
  return {v.data() + i * v.stride(0), e, s};
}

// A contiguous view seen with other extents of the same size.
template <std::size_t NewRank, class T, std::size_t R, class S>
tensor_view<T, NewRank, S> reshape(const tensor_view<T, R, S>& v, const extents_t<NewRank>& e) {
  index_t n = 1;
  for (index_t x : e) n *= x;
  BLIP2_CHECK(v.is_contiguous(), shape_error, "reshape: view ", shape_string(v), " is not contiguous");
  BLIP2_CHECK(n == v.size(), shape_error, "reshape: cannot view ", shape_string(v), " as ",
              shape_string<NewRank>(e));
  return {v.data(), e};
}

// (d0, ..., d_{R-2}, d_{R-1}) -> (d0 * ... * d_{R-2}, d_{R-1}) when the leading dimensions are dense.
template <class T, std::size_t R, class S>
tensor_view<T, 2, S> flatten_rows(const tensor_view<T, R, S>& v) {
  if constexpr (R == 2) {
    return v;
  } else {
    index_t rows = 1;
    for (std::size_t d = 0; d + 1 < R; ++d) rows *= v.extent(d);
    // the leading dimensions must be dense with respect to each other
    for (std::size_t d = 0; d + 2 < R; ++d)
      BLIP2_CHECK(v.extent(d) == 1 || v.stride(d) == v.stride(d + 1) * v.extent(d + 1), shape_error,
                  "flatten_rows: leading dimensions of ", shape_string(v), " are not dense");
    return {v.data(), {rows, v.extent(R - 1)}, {R >= 2 ? v.stride(R - 2) : 0, v.stride(R - 1)}};
  }
}

}  // namespace blip2
