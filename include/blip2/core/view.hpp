// blip2/core/view.hpp: blip2::view(x), the customisation point that turns any user tensor into a
// tensor_view, and the tensor concepts built on it.
//
// Lookup order:
//   1. x is already a tensor_view: returned as is;
//   2. blip2::tensor_traits<X> is specialised: tensor_traits<X>::view(x) (the adaptors in adapt/ do this;
//      so can you, for your own type; set `static constexpr bool contiguous = true` when every view
//      it makes is dense row-major);
//   3. x has .data() and a .shape() returning a std::array of integers: a dense row-major view.
// Types whose rank is only known at run time (xt::xarray, a shape in a std::vector) are viewed with an
// explicit rank: blip2::view<3>(x), which checks the rank and throws shape_error when it differs.
#pragma once
#include <array>
#include <concepts>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// Specialise for your type: `static auto view(X& x) -> tensor_view<...>`.
template <class X>
struct tensor_traits;

namespace detail {
template <class A>
struct is_std_array : std::false_type {};
template <class E, std::size_t N>
struct is_std_array<std::array<E, N>> : std::true_type {};

template <class X>
concept has_tensor_traits = requires(X& x) { tensor_traits<std::remove_cvref_t<X>>::view(x); };

template <class X>
concept has_static_shape = requires(X& x) {
  x.data();
  requires std::is_pointer_v<decltype(x.data())>;
  requires is_std_array<std::remove_cvref_t<decltype(x.shape())>>::value;
  requires std::integral<typename std::remove_cvref_t<decltype(x.shape())>::value_type>;
};

template <class X>
concept has_dynamic_shape = requires(X& x) {
  x.data();
  requires std::is_pointer_v<decltype(x.data())>;
  { x.shape().size() } -> std::convertible_to<std::size_t>;
  { x.shape()[0] } -> std::convertible_to<index_t>;
};

template <class E>
using elem_of_ptr = std::remove_pointer_t<E>;

template <std::size_t Rank, class Ptr, class Shape>
auto dense_view(Ptr ptr, const Shape& shape) {
  extents_t<Rank> e{};
  for (std::size_t i = 0; i < Rank; ++i) e[i] = static_cast<index_t>(shape[i]);
  return tensor_view<std::remove_pointer_t<Ptr>, Rank>(ptr, e);
}
}  // namespace detail

// Anything blip2::view accepts.
template <class X>
concept tensor = is_tensor_view_v<X> || detail::has_tensor_traits<X> || detail::has_static_shape<X>;

template <class X>
  requires tensor<X>
constexpr auto view(X&& x) {
  if constexpr (is_tensor_view_v<X>) {
    return std::remove_cvref_t<X>(x);
  } else if constexpr (detail::has_tensor_traits<X>) {
    return tensor_traits<std::remove_cvref_t<X>>::view(x);
  } else {
    using shape_t = std::remove_cvref_t<decltype(x.shape())>;
    return detail::dense_view<std::tuple_size_v<shape_t>>(x.data(), x.shape());
  }
}

// Explicit rank: also works for types with a run-time rank; checks it.
template <std::size_t Rank, class X>
  requires(tensor<X> || detail::has_dynamic_shape<X>)
auto view(X&& x) {
  if constexpr (tensor<X>) {
    auto v = view(std::forward<X>(x));
    static_assert(decltype(v)::rank == Rank, "blip2::view<Rank>: the tensor's static rank differs from Rank");
    return v;
  } else {
    const auto& shape = x.shape();
    BLIP2_CHECK(shape.size() == Rank, shape_error, "blip2::view<", Rank, ">: tensor has rank ", shape.size(),
                ", expected rank ", Rank);
    return detail::dense_view<Rank>(x.data(), shape);
  }
}

// A type that is not a tensor lands here and gets a message that says what is missing.
template <class X>
  requires(!tensor<X>)
void view(X&&) {
  static_assert(tensor<X>,
                "blip2::view: this type is not a tensor. Either specialise blip2::tensor_traits<X> with "
                "`static auto view(X&)` returning a blip2::tensor_view, or give the type .data() returning "
                "a pointer and .shape() returning a std::array of integers.");
}

template <tensor X>
using view_t = decltype(view(std::declval<X&>()));

template <class X, class Elem, std::size_t Rank>
concept tensor_of = tensor<X> && std::same_as<typename view_t<X>::value_type, Elem> && view_t<X>::rank == Rank;

namespace detail {
template <class X>
constexpr bool statically_contiguous() {
  if constexpr (is_tensor_view_v<X>) {
    return false;  // a view's contiguity is a run-time property: ask v.is_contiguous()
  } else if constexpr (has_tensor_traits<X>) {
    if constexpr (requires { tensor_traits<std::remove_cvref_t<X>>::contiguous; })
      return tensor_traits<std::remove_cvref_t<X>>::contiguous;
    else
      return false;
  } else {
    return true;  // .data() + .shape() means dense row-major
  }
}
}  // namespace detail

// A tensor whose views are dense and row-major by construction (checked at compile time).
template <class X>
concept contiguous_tensor = tensor<X> && detail::statically_contiguous<std::remove_cvref_t<X>>();

}  // namespace blip2
