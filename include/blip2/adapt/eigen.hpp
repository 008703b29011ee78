// blip2/adapt/eigen.hpp: Eigen matrices, arrays, maps and tensors as blip2 tensors, without a copy.
//
// Include this header (and link blip2::eigen) and every Eigen object below can be passed straight to a
// blip2 op; blip2::view(x) gives a tensor_view over the object's own storage, with Eigen's strides:
//
//   Eigen type                                   view                      strides (elements)
//   Matrix / Array (R x C), row-major            tensor_view<T, 2>         (C, 1)       dense, contiguous
//   Matrix / Array (R x C), column-major         tensor_view<T, 2>         (1, R)       a transposed layout
//   Map / Ref (R x C) with Stride<Outer, Inner>  tensor_view<T, 2>         Eigen's rowStride(), colStride()
//   compile-time vectors (VectorXf, RowVector3d) tensor_view<T, 1>         (innerStride)
//   Tensor / TensorFixedSize / TensorMap, N dims tensor_view<T, N>         RowMajor: row-major;
//                                                                          ColMajor (the default): (1, d0, d0*d1, ...)
//
// Vectors are rank 1 so that a VectorXf can be a LayerNorm weight or a bias; a dynamic (R x C) matrix
// stays rank 2 even when R or C is 1. Column-major data is accepted by every reference kernel as is
// (kernels read through strides); a kernel that needs dense rows says so with a shape_error.
// Expressions (m.block(...), m.col(j), m.transpose()) are not tensors: bind a block to an Eigen::Ref
// first, or take blip2::transpose / blip2::slice of the matrix's view.
// A const object gives a view of const elements (also a const Map or TensorMap over mutable data).
// Types whose views are dense row-major by construction declare it (`contiguous = true`), which the
// contiguous_tensor concept reads.
#pragma once
#if !__has_include(<Eigen/Core>) || !__has_include(<unsupported/Eigen/CXX11/Tensor>)
#error "blip2/adapt/eigen.hpp needs Eigen 3.3 or later: link the CMake target blip2::eigen (find_package(Eigen3 NO_MODULE))"
#endif
#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <cstddef>
#include <type_traits>

#include "blip2/core/view.hpp"

namespace blip2 {
namespace eigen_detail {

// The element type of a view of x: const when x (or what it maps) is const.
template <class X>
using element_t = std::conditional_t<std::is_const_v<std::remove_reference_t<X>>,
                                     const std::remove_pointer_t<decltype(std::declval<X&>().data())>,
                                     std::remove_pointer_t<decltype(std::declval<X&>().data())>>;

// Any dense Eigen object with direct access to its coefficients (Matrix, Array, Map, Ref).
template <class X>
auto dense_view(X& x) {
  using plain = std::remove_cv_t<X>;
  using T = element_t<X>;
  if constexpr (plain::IsVectorAtCompileTime) {
    return tensor_view<T, 1>(x.data(), {static_cast<index_t>(x.size())},  // (n)
                             {static_cast<index_t>(x.innerStride())});
  } else {
    return tensor_view<T, 2>(x.data(), {static_cast<index_t>(x.rows()), static_cast<index_t>(x.cols())},  // (R, C)
                             {static_cast<index_t>(x.rowStride()), static_cast<index_t>(x.colStride())});
  }
}

// An Eigen Tensor-module object: dimensions() and data(), dense in its Layout.
template <std::size_t N, class X>
auto tensor_module_view(X& x) {
  using plain = std::remove_cv_t<X>;
  using T = element_t<X>;
  static_assert(std::is_pointer_v<decltype(x.data())>, "blip2/adapt/eigen.hpp: only host (raw pointer) tensors");
  extents_t<N> e{};
  const auto& d = x.dimensions();
  for (std::size_t i = 0; i < N; ++i) e[i] = static_cast<index_t>(d[i]);
  if constexpr (static_cast<int>(plain::Layout) == static_cast<int>(Eigen::RowMajor)) {
    return tensor_view<T, N>(x.data(), e);
  } else {
    // column-major: the first index moves fastest
    extents_t<N> s{};
    index_t step = 1;
    for (std::size_t i = 0; i < N; ++i) {
      s[i] = step;
      step *= e[i];
    }
    return tensor_view<T, N>(x.data(), e, s);
  }
}

// Whether a Map/Ref with stride type St over Plain is dense row-major for every object of the type.
template <class Plain, class St>
inline constexpr bool dense_stride_v =
    (St::InnerStrideAtCompileTime == 0 || St::InnerStrideAtCompileTime == 1) &&
    (Plain::IsVectorAtCompileTime || (Plain::IsRowMajor && St::OuterStrideAtCompileTime == 0));

template <class Plain>
inline constexpr bool plain_row_major_v = Plain::IsVectorAtCompileTime || Plain::IsRowMajor;

// The traits shared by the dense (Matrix-module) types.
template <class X, bool Contiguous>
struct dense_traits {
  static constexpr bool contiguous = Contiguous;
  static auto view(X& x) { return dense_view(x); }
  static auto view(const X& x) { return dense_view(x); }
};

template <class X, std::size_t N>
struct tensor_module_traits {
  static constexpr bool contiguous = static_cast<int>(X::Layout) == static_cast<int>(Eigen::RowMajor) || N <= 1;
  static auto view(X& x) { return tensor_module_view<N>(x); }
  static auto view(const X& x) { return tensor_module_view<N>(x); }
};

}  // namespace eigen_detail

// ---- Matrix module ----

template <class S, int R, int C, int O, int MR, int MC>
struct tensor_traits<Eigen::Matrix<S, R, C, O, MR, MC>>
    : eigen_detail::dense_traits<Eigen::Matrix<S, R, C, O, MR, MC>,
                                 eigen_detail::plain_row_major_v<Eigen::Matrix<S, R, C, O, MR, MC>>> {};

template <class S, int R, int C, int O, int MR, int MC>
struct tensor_traits<Eigen::Array<S, R, C, O, MR, MC>>
    : eigen_detail::dense_traits<Eigen::Array<S, R, C, O, MR, MC>,
                                 eigen_detail::plain_row_major_v<Eigen::Array<S, R, C, O, MR, MC>>> {};

// Map<Plain, Options, Stride<Outer, Inner>> (also OuterStride<>, InnerStride<>; static or dynamic).
template <class Plain, int MapOptions, class St>
struct tensor_traits<Eigen::Map<Plain, MapOptions, St>>
    : eigen_detail::dense_traits<Eigen::Map<Plain, MapOptions, St>, eigen_detail::dense_stride_v<Plain, St>> {};

// Ref<Plain, Options, Stride>: blocks and other direct-access expressions bound to a Ref.
template <class Plain, int RefOptions, class St>
struct tensor_traits<Eigen::Ref<Plain, RefOptions, St>>
    : eigen_detail::dense_traits<Eigen::Ref<Plain, RefOptions, St>, eigen_detail::dense_stride_v<Plain, St>> {};

// ---- Tensor module ----

template <class S, int N, int O, class I>
struct tensor_traits<Eigen::Tensor<S, N, O, I>>
    : eigen_detail::tensor_module_traits<Eigen::Tensor<S, N, O, I>, static_cast<std::size_t>(N)> {};

template <class S, class Dims, int O, class I>
struct tensor_traits<Eigen::TensorFixedSize<S, Dims, O, I>>
    : eigen_detail::tensor_module_traits<Eigen::TensorFixedSize<S, Dims, O, I>,
                                         static_cast<std::size_t>(Eigen::TensorFixedSize<S, Dims, O, I>::NumIndices)> {};

// TensorMap over host memory (the default MakePointer); TensorMap<const Tensor<...>> gives const views.
template <class Plain, int MapOptions>
struct tensor_traits<Eigen::TensorMap<Plain, MapOptions, Eigen::MakePointer>>
    : eigen_detail::tensor_module_traits<Eigen::TensorMap<Plain, MapOptions, Eigen::MakePointer>,
                                         static_cast<std::size_t>(std::remove_cv_t<Plain>::NumIndices)> {};

}  // namespace blip2
