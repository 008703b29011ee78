// blip2/core/check.hpp: argument checks shared by the public ops.
//
// Every public op turns its tensor arguments into views with arg_view<Backend, Rank> (which also checks
// at compile time that the memory space matches the backend's) and checks their extents with
// check_shape, whose message names the op, the tensor, its shape and the expected one.
#pragma once
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "blip2/core/view.hpp"

namespace blip2 {

// How a backward writes an activation gradient: assigned (the default), or added to what is there
// (residual stream, tensors used twice). Parameter gradients are always accumulated.
enum class grad_write { assign, accumulate };

namespace detail {

// view(x) as a view of rank Rank in Backend's memory space.
template <class Backend, std::size_t Rank, class X>
auto arg_view(X&& x) {
  auto v = view(std::forward<X>(x));
  using V = decltype(v);
  static_assert(std::is_same_v<typename V::memory_space_type, typename Backend::memory_space>,
                "blip2: a tensor's memory space differs from the backend's (host data passed to a device "
                "backend, or the other way round); copy it to the backend's space first");
  static_assert(V::rank == Rank, "blip2: a tensor argument has the wrong rank for this op");
  return v;
}

// Like arg_view, then rows of all leading dimensions: (d0, ..., dk, C) -> (d0 * ... * dk, C).
template <class Backend, class X>
auto arg_rows(X&& x) {
  auto v = view(std::forward<X>(x));
  using V = decltype(v);
  static_assert(std::is_same_v<typename V::memory_space_type, typename Backend::memory_space>,
                "blip2: a tensor's memory space differs from the backend's");
  static_assert(V::rank >= 1, "blip2: expected a tensor of rank >= 1");
  if constexpr (V::rank == 1)
    return tensor_view<typename V::element_type, 2, typename V::memory_space_type>(
        v.data(), {1, v.extent(0)}, {v.extent(0) * v.stride(0), v.stride(0)});
  else
    return flatten_rows(v);
}

template <class T, std::size_t R, class S>
void check_shape(std::string_view op, std::string_view name, const tensor_view<T, R, S>& v,
                 const extents_t<R>& expected) {
  BLIP2_CHECK(v.extents() == expected, shape_error, op, ": tensor '", name, "' has shape ", shape_string(v),
              " but ", shape_string<R>(expected), " was expected");
}

template <class T, std::size_t R, class S>
void check_contiguous(std::string_view op, std::string_view name, const tensor_view<T, R, S>& v) {
  BLIP2_CHECK(v.is_contiguous(), shape_error, op, ": tensor '", name, "' of shape ", shape_string(v),
              " must be contiguous (row-major)");
}

template <class T, std::size_t R, class S>
tensor_view<const T, R, S> as_const(const tensor_view<T, R, S>& v) {
  return v;
}

// A view of rank R <= 4 seen as rank 4, leading extents 1 (stride 0): the form of the strided kernels
// (copy, fill, the host copies), so one kernel serves every rank.
template <class T, std::size_t R, class S>
tensor_view<T, 4, S> as_rank4(const tensor_view<T, R, S>& v) {
  static_assert(R <= 4, "blip2: this op takes tensors of rank <= 4");
  extents_t<4> e{1, 1, 1, 1}, st{0, 0, 0, 0};
  for (std::size_t i = 0; i < R; ++i) {
    e[4 - R + i] = v.extent(i);
    st[4 - R + i] = v.stride(i);
  }
  return {v.data(), e, st};
}

template <class A, class B>
inline constexpr bool same_value_type_v =
    std::is_same_v<typename A::value_type, typename B::value_type>;

// The checks of the copy ops (copy, copy_to_host, copy_from_host): dst = src needs the same rank (<= 4),
// element type and shape, and a writable dst.
template <class D, class S>
void check_copy(std::string_view op, std::string_view dst_name, const D& dst, const S& src) {
  static_assert(D::rank == S::rank && D::rank <= 4, "blip2: a copy's views differ in rank or exceed rank 4");
  static_assert(same_value_type_v<D, S>, "blip2: a copy's views differ in element type");
  static_assert(!std::is_const_v<typename D::element_type>, "blip2: a copy's destination is read-only");
  check_shape(op, dst_name, dst, src.extents());
}

}  // namespace detail
}  // namespace blip2
