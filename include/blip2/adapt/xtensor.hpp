// blip2/adapt/xtensor.hpp: xtensor containers and adaptors as blip2 tensors, without a copy.
//
// Include this header (and link blip2::xtensor) and xtensor objects can be passed to blip2 ops.
// A view points at the object's own buffer and takes xtensor's strides (in elements) as they are:
// a column-major or a strided xt::adapt stays what it is, and the stride 0 that xtensor gives an
// extent-1 dimension is fine for a tensor_view.
//
//   xtensor type                                         blip2::view(x)            rank
//   xt::xtensor<T, N>, xt::xtensor_adaptor<..., N, ...>   tensor_view<T, N>         static
//     (what xt::adapt(ptr_or_container, std::array shape) returns), xt::xtensor_pointer, xt::xtensor_fixed
//   xt::xarray<T>, xt::xarray_adaptor<...>                blip2::view<N>(x)         run time: checked,
//     (what xt::adapt(ptr_or_container, std::vector shape) returns)                 shape_error if not N
//
// xarray has no static rank, so it is not a `tensor` itself: make a view of the rank an op expects,
//   auto v = blip2::view<2>(arr);           // throws blip2::shape_error when arr.dimension() != 2
//   blip2::layer_norm_forward(be, out_v, cache, v, w, b, 1e-5);
// A const object gives a view of const elements. blip2::view<N> of a temporary xarray is deleted (the view
// would dangle); a temporary adaptor is fine, it does not own its buffer.
#pragma once
#if !__has_include(<xtensor/xtensor.hpp>)
#error "blip2/adapt/xtensor.hpp needs xtensor 0.24 or later: link the CMake target blip2::xtensor (find_package(xtensor))"
#endif
#include <xtensor/xarray.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xtensor.hpp>

#include <cstddef>
#include <string>
#include <type_traits>

#include "blip2/core/view.hpp"

namespace blip2 {
namespace xtensor_detail {

// The element type of a view of x: const when x is const (or adapts const memory).
template <class X>
using element_t = std::conditional_t<std::is_const_v<std::remove_reference_t<X>>,
                                     const std::remove_pointer_t<decltype(std::declval<X&>().data())>,
                                     std::remove_pointer_t<decltype(std::declval<X&>().data())>>;

// A view of rank N over x's buffer, with x's shape and strides (the caller has checked the rank).
template <std::size_t N, class X>
auto strided_view(X& x) {
  using T = element_t<X>;
  static_assert(std::is_pointer_v<decltype(x.data())>, "blip2/adapt/xtensor.hpp: the container has no raw buffer");
  const auto& shape = x.shape();
  const auto& strides = x.strides();
  extents_t<N> e{};
  extents_t<N> s{};
  for (std::size_t i = 0; i < N; ++i) {
    e[i] = static_cast<index_t>(shape[i]);
    s[i] = static_cast<index_t>(strides[i]);
  }
  return tensor_view<T, N>(x.data() + x.data_offset(), e, s);
}

// Static rank: the traits of xtensor_container, xtensor_adaptor, xtensor_view and xfixed_container.
template <class X, std::size_t N, xt::layout_type L>
struct static_rank_traits {
  static constexpr bool contiguous = L == xt::layout_type::row_major;
  static auto view(X& x) { return strided_view<N>(x); }
  static auto view(const X& x) { return strided_view<N>(x); }
};

template <class X>
std::string shape_of(const X& x) {
  std::string s = "(";
  for (std::size_t i = 0; i < x.dimension(); ++i) s += (i ? ", " : "") + std::to_string(x.shape()[i]);
  return s + ")";
}

// Run-time rank: the checked view behind blip2::view<N>(xarray).
template <std::size_t N, class X>
auto checked_view(X& x) {
  BLIP2_CHECK(x.dimension() == N, shape_error, "blip2::view<", N, ">: xtensor array of shape ", shape_of(x),
              " has rank ", x.dimension(), ", expected rank ", N);
  return strided_view<N>(x);
}

// Whether an adaptor's storage EC owns its buffer (then a view of a temporary adaptor would dangle).
template <class EC>
struct owns_buffer : std::bool_constant<!std::is_lvalue_reference_v<EC>> {};
template <class CP, class A>
struct owns_buffer<xt::xbuffer_adaptor<CP, xt::no_ownership, A>> : std::false_type {};

}  // namespace xtensor_detail

// ---- static rank ----

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct tensor_traits<xt::xtensor_container<EC, N, L, Tag>>
    : xtensor_detail::static_rank_traits<xt::xtensor_container<EC, N, L, Tag>, N, L> {};

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct tensor_traits<xt::xtensor_adaptor<EC, N, L, Tag>>
    : xtensor_detail::static_rank_traits<xt::xtensor_adaptor<EC, N, L, Tag>, N, L> {};

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct tensor_traits<xt::xtensor_view<EC, N, L, Tag>>
    : xtensor_detail::static_rank_traits<xt::xtensor_view<EC, N, L, Tag>, N, L> {};

template <class ET, class S, xt::layout_type L, bool SH, class Tag>
struct tensor_traits<xt::xfixed_container<ET, S, L, SH, Tag>>
    : xtensor_detail::static_rank_traits<xt::xfixed_container<ET, S, L, SH, Tag>,
                                         xt::xfixed_container<ET, S, L, SH, Tag>::rank, L> {};

// ---- run-time rank: blip2::view<N>(x) ----
// More specialised than view.hpp's generic view<N>(X&&), so these win for xarray types.

template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
auto view(xt::xarray_container<EC, L, SC, Tag>& x) {
  return xtensor_detail::checked_view<N>(x);
}
template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
auto view(const xt::xarray_container<EC, L, SC, Tag>& x) {
  return xtensor_detail::checked_view<N>(x);
}
template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
void view(xt::xarray_container<EC, L, SC, Tag>&& x) = delete;  // the view would outlive the array

template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
auto view(xt::xarray_adaptor<EC, L, SC, Tag>& x) {
  return xtensor_detail::checked_view<N>(x);
}
template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
auto view(const xt::xarray_adaptor<EC, L, SC, Tag>& x) {
  return xtensor_detail::checked_view<N>(x);
}
// xt::adapt(pointer or lvalue container, shape) straight into a view: the temporary owns nothing.
template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
  requires(!xtensor_detail::owns_buffer<EC>::value)
auto view(xt::xarray_adaptor<EC, L, SC, Tag>&& x) {
  return xtensor_detail::checked_view<N>(x);
}
template <std::size_t N, class EC, xt::layout_type L, class SC, class Tag>
  requires(xtensor_detail::owns_buffer<EC>::value)
void view(xt::xarray_adaptor<EC, L, SC, Tag>&& x) = delete;  // an owning temporary: the view would dangle

}  // namespace blip2
