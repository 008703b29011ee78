// test_adaptors: Eigen and xtensor objects as blip2 tensors, zero copy.
//   For each adaptor: the view points at the object's own storage, its extents and strides are the
//   object's, every element read through the view is the object's element (the same address), writes
//   through the view show in the object, and const objects give views of const elements. Then
//   blip2::layer_norm_forward runs on the reference backend directly on Eigen and xtensor objects
//   (row-major, column-major, transposed, strided) and gives what it gives on host_tensor.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "blip2/adapt/eigen.hpp"
#include "blip2/adapt/xtensor.hpp"
#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/nn/layer_norm.hpp"

#include <xtensor/xadapt.hpp>

using blip2::extents_t;
using blip2::host_tensor;
using blip2::index_t;
using blip2::tensor_view;

namespace {

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A deterministic pseudo-random value for element i.
float value(std::uint64_t seed, std::uint64_t i) { return 2.0f * blip2::uniform_float(seed, i) - 1.0f; }

// The view starts at the object's storage, and every (i, j) of a rank-2 view is the Eigen object's
// coefficient: same address, same value.
template <class V, class M>
void check_same_2d(const V& v, M& m) {
  static_assert(V::rank == 2);
  CHECK(static_cast<const void*>(v.data()) == static_cast<const void*>(m.data()));
  REQUIRE(v.extent(0) == m.rows());
  REQUIRE(v.extent(1) == m.cols());
  int wrong = 0;
  for (index_t i = 0; i < v.extent(0); ++i)
    for (index_t j = 0; j < v.extent(1); ++j) wrong += (&v(i, j) != &m.coeffRef(i, j)) || (v(i, j) != m(i, j));
  CHECK(wrong == 0);
}

// The same for an Eigen vector seen as rank 1.
template <class V, class M>
void check_same_1d(const V& v, M& m) {
  static_assert(V::rank == 1);
  CHECK(static_cast<const void*>(v.data()) == static_cast<const void*>(m.data()));
  REQUIRE(v.extent(0) == m.size());
  int wrong = 0;
  for (index_t i = 0; i < v.extent(0); ++i) wrong += (&v(i) != &m.coeffRef(i)) || (v(i) != m(i));
  CHECK(wrong == 0);
}

// Rank-3 Eigen tensors (coeffRef takes indices).
template <class V, class M>
void check_same_3d(const V& v, M& t) {
  static_assert(V::rank == 3);
  CHECK(static_cast<const void*>(v.data()) == static_cast<const void*>(t.data()));
  REQUIRE(v.extent(0) == t.dimension(0));
  REQUIRE(v.extent(1) == t.dimension(1));
  REQUIRE(v.extent(2) == t.dimension(2));
  int wrong = 0;
  for (index_t i = 0; i < v.extent(0); ++i)
    for (index_t j = 0; j < v.extent(1); ++j)
      for (index_t k = 0; k < v.extent(2); ++k) wrong += (&v(i, j, k) != &t(i, j, k)) || (v(i, j, k) != t(i, j, k));
  CHECK(wrong == 0);
}

// xtensor: element by element through xtensor's own indexing (xt::xarray too).
template <class V, class X>
void check_same_xt(const V& v, X& x) {
  REQUIRE(x.dimension() == V::rank);
  CHECK(static_cast<const void*>(v.data()) == static_cast<const void*>(x.data()));
  for (std::size_t d = 0; d < V::rank; ++d) REQUIRE(v.extent(d) == static_cast<index_t>(x.shape()[d]));
  int wrong = 0;
  if constexpr (V::rank == 1) {
    for (index_t i = 0; i < v.extent(0); ++i) wrong += (&v(i) != &x(i)) || v(i) != x(i);
  } else if constexpr (V::rank == 2) {
    for (index_t i = 0; i < v.extent(0); ++i)
      for (index_t j = 0; j < v.extent(1); ++j) wrong += (&v(i, j) != &x(i, j)) || v(i, j) != x(i, j);
  } else {
    static_assert(V::rank == 3);
    for (index_t i = 0; i < v.extent(0); ++i)
      for (index_t j = 0; j < v.extent(1); ++j)
        for (index_t k = 0; k < v.extent(2); ++k) wrong += (&v(i, j, k) != &x(i, j, k)) || v(i, j, k) != x(i, j, k);
  }
  CHECK(wrong == 0);
}

template <class M>
void fill_eigen(M& m, std::uint64_t seed) {
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = value(seed, static_cast<std::uint64_t>(i));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Concepts (compile time)

static_assert(blip2::tensor_of<Eigen::MatrixXf, float, 2>);
static_assert(blip2::tensor_of<row_matrix, float, 2>);
static_assert(blip2::tensor_of<Eigen::Matrix3d, double, 2>);
static_assert(blip2::tensor_of<Eigen::VectorXf, float, 1>);
static_assert(blip2::tensor_of<Eigen::RowVectorXd, double, 1>);
static_assert(blip2::tensor_of<Eigen::ArrayXXf, float, 2>);
static_assert(blip2::tensor_of<Eigen::Map<Eigen::MatrixXf>, float, 2>);
static_assert(blip2::tensor_of<Eigen::Map<const Eigen::MatrixXf, 0, Eigen::OuterStride<>>, float, 2>);
static_assert(blip2::tensor_of<Eigen::Ref<Eigen::MatrixXf>, float, 2>);
static_assert(blip2::tensor_of<Eigen::Tensor<float, 3>, float, 3>);
static_assert(blip2::tensor_of<Eigen::TensorMap<Eigen::Tensor<float, 4>>, float, 4>);
static_assert(blip2::tensor_of<Eigen::TensorFixedSize<double, Eigen::Sizes<2, 3>>, double, 2>);
static_assert(blip2::contiguous_tensor<row_matrix>);
static_assert(blip2::contiguous_tensor<Eigen::VectorXf>);
static_assert(!blip2::contiguous_tensor<Eigen::MatrixXf>);  // column-major
static_assert(blip2::contiguous_tensor<Eigen::Map<row_matrix>>);
static_assert(!blip2::contiguous_tensor<Eigen::Map<row_matrix, 0, Eigen::OuterStride<>>>);
static_assert(!blip2::contiguous_tensor<Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<2>>>);
static_assert(blip2::contiguous_tensor<Eigen::Tensor<float, 3, Eigen::RowMajor>>);
static_assert(!blip2::contiguous_tensor<Eigen::Tensor<float, 3>>);  // ColMajor
static_assert(std::is_same_v<blip2::view_t<const Eigen::MatrixXf>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<Eigen::Map<const Eigen::MatrixXf>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<const Eigen::Map<Eigen::MatrixXf>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<const Eigen::Tensor<float, 2>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<Eigen::TensorMap<Eigen::Tensor<const float, 2>>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<const Eigen::TensorMap<Eigen::Tensor<float, 2>>>, tensor_view<const float, 2>>);

static_assert(blip2::tensor_of<xt::xtensor<float, 3>, float, 3>);
static_assert(blip2::tensor_of<xt::xtensor<double, 1>, double, 1>);
static_assert(blip2::tensor_of<xt::xtensor_fixed<float, xt::xshape<2, 3>>, float, 2>);
static_assert(blip2::contiguous_tensor<xt::xtensor<float, 3>>);
static_assert(!blip2::contiguous_tensor<xt::xtensor<float, 2, xt::layout_type::column_major>>);
static_assert(!blip2::tensor<xt::xarray<float>>);  // run-time rank: blip2::view<R>(x)
static_assert(std::is_same_v<blip2::view_t<const xt::xtensor<float, 2>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<decltype(blip2::view<2>(std::declval<xt::xarray<float>&>())), tensor_view<float, 2>>);
static_assert(std::is_same_v<decltype(blip2::view<2>(std::declval<const xt::xarray<float>&>())),
                             tensor_view<const float, 2>>);
// a view of a temporary xarray would dangle: deleted; a temporary non-owning xt::adapt is fine
template <class X>
concept viewable_as_rank2 = requires(X&& x) { blip2::view<2>(static_cast<X&&>(x)); };
static_assert(viewable_as_rank2<xt::xarray<float>&>);
static_assert(!viewable_as_rank2<xt::xarray<float>>);
using borrowed_adaptor = decltype(xt::adapt(std::declval<float*>(), 6, xt::no_ownership(), std::vector<std::size_t>{2, 3}));
using owning_adaptor = decltype(xt::adapt(std::declval<std::vector<float>>(), std::vector<std::size_t>{2, 3}));
static_assert(viewable_as_rank2<borrowed_adaptor>);
static_assert(!viewable_as_rank2<owning_adaptor>);

// ---------------------------------------------------------------------------------------------------
// Eigen

TEST_CASE("eigen: Matrix, column-major (the default): strides (1, rows)") {
  Eigen::MatrixXf m(3, 5);
  fill_eigen(m, 1);
  auto v = blip2::view(m);
  static_assert(std::is_same_v<decltype(v), tensor_view<float, 2>>);
  CHECK(v.data() == m.data());
  CHECK(v.extents() == extents_t<2>{3, 5});
  CHECK(v.strides() == extents_t<2>{1, 3});
  CHECK_FALSE(v.is_contiguous());
  CHECK(blip2::transpose(v).is_contiguous());  // its transpose is dense row-major
  check_same_2d(v, m);
  v(2, 4) = 42.0f;
  CHECK(m(2, 4) == 42.0f);
  const Eigen::MatrixXf& cm = m;
  auto cv = blip2::view(cm);
  static_assert(std::is_same_v<decltype(cv), tensor_view<const float, 2>>);
  CHECK(cv.data() == m.data());
  CHECK(cv(2, 4) == 42.0f);
}

TEST_CASE("eigen: Matrix, row-major and fixed size; Array") {
  row_matrix r(4, 3);
  fill_eigen(r, 2);
  auto v = blip2::view(r);
  CHECK(v.data() == r.data());
  CHECK(v.strides() == extents_t<2>{3, 1});
  CHECK(v.is_contiguous());
  check_same_2d(v, r);
  v(3, 0) = -7.0f;
  CHECK(r(3, 0) == -7.0f);

  Eigen::Matrix<double, 2, 3, Eigen::RowMajor> f;
  fill_eigen(f, 3);
  auto fv = blip2::view(f);
  static_assert(std::is_same_v<decltype(fv), tensor_view<double, 2>>);
  CHECK(fv.strides() == extents_t<2>{3, 1});
  check_same_2d(fv, f);

  Eigen::Matrix3d c3;
  fill_eigen(c3, 4);
  CHECK(blip2::view(c3).strides() == extents_t<2>{1, 3});
  check_same_2d(blip2::view(c3), c3);

  Eigen::ArrayXXf a(2, 6);
  fill_eigen(a, 5);
  auto av = blip2::view(a);
  CHECK(av.data() == a.data());
  CHECK(av.strides() == extents_t<2>{1, 2});
  check_same_2d(av, a);

  // a dynamic matrix with one column is still a matrix (rank 2)
  Eigen::MatrixXf col(4, 1);
  CHECK(decltype(blip2::view(col))::rank == 2);
}

TEST_CASE("eigen: vectors are rank 1") {
  Eigen::VectorXf x(7);
  fill_eigen(x, 6);
  auto v = blip2::view(x);
  static_assert(std::is_same_v<decltype(v), tensor_view<float, 1>>);
  CHECK(v.data() == x.data());
  CHECK(v.extent(0) == 7);
  CHECK(v.stride(0) == 1);
  check_same_1d(v, x);
  v(6) = 3.0f;
  CHECK(x(6) == 3.0f);

  Eigen::RowVectorXd r(5);
  fill_eigen(r, 7);
  check_same_1d(blip2::view(r), r);
  Eigen::Vector4f s4;
  fill_eigen(s4, 8);
  check_same_1d(blip2::view(s4), s4);
}

TEST_CASE("eigen: Map with default, outer, inner and general strides (dynamic and static)") {
  std::vector<float> buf(200);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);

  SUBCASE("dense column-major and row-major maps") {
    Eigen::Map<Eigen::MatrixXf> m(buf.data(), 3, 4);
    auto v = blip2::view(m);
    CHECK(v.data() == buf.data());
    CHECK(v.strides() == extents_t<2>{1, 3});
    check_same_2d(v, m);
    Eigen::Map<row_matrix> rm(buf.data() + 1, 3, 4);
    CHECK(blip2::view(rm).data() == buf.data() + 1);
    CHECK(blip2::view(rm).strides() == extents_t<2>{4, 1});
    check_same_2d(blip2::view(rm), rm);
  }
  SUBCASE("OuterStride<> (dynamic): a padded leading dimension") {
    Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<>> m(buf.data(), 3, 4, Eigen::OuterStride<>(10));
    CHECK(blip2::view(m).strides() == extents_t<2>{1, 10});
    check_same_2d(blip2::view(m), m);
    Eigen::Map<row_matrix, 0, Eigen::OuterStride<>> rm(buf.data(), 3, 4, Eigen::OuterStride<>(9));
    CHECK(blip2::view(rm).strides() == extents_t<2>{9, 1});
    check_same_2d(blip2::view(rm), rm);
  }
  SUBCASE("OuterStride<8> (static)") {
    Eigen::Map<Eigen::MatrixXf, 0, Eigen::OuterStride<8>> m(buf.data(), 5, 3);
    CHECK(blip2::view(m).strides() == extents_t<2>{1, 8});
    check_same_2d(blip2::view(m), m);
  }
  SUBCASE("InnerStride: every other element") {
    Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<2>> x(buf.data(), 6);
    auto v = blip2::view(x);
    static_assert(decltype(v)::rank == 1);
    CHECK(v.stride(0) == 2);
    check_same_1d(v, x);
    Eigen::Map<Eigen::VectorXf, 0, Eigen::InnerStride<>> xd(buf.data(), 6, Eigen::InnerStride<>(3));
    CHECK(blip2::view(xd).stride(0) == 3);
    check_same_1d(blip2::view(xd), xd);
    Eigen::Map<Eigen::MatrixXf, 0, Eigen::InnerStride<2>> m(buf.data(), 3, 4);  // outer = 2 * rows
    check_same_2d(blip2::view(m), m);
  }
  SUBCASE("Stride<Dynamic, Dynamic> and Stride<12, 3>") {
    using dyn = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
    Eigen::Map<Eigen::MatrixXf, 0, dyn> m(buf.data(), 3, 4, dyn(11, 2));
    CHECK(blip2::view(m).strides() == extents_t<2>{2, 11});
    check_same_2d(blip2::view(m), m);
    Eigen::Map<row_matrix, 0, dyn> rm(buf.data(), 3, 4, dyn(13, 3));
    CHECK(blip2::view(rm).strides() == extents_t<2>{13, 3});
    check_same_2d(blip2::view(rm), rm);
    Eigen::Map<Eigen::Matrix<float, 3, 4>, 0, Eigen::Stride<12, 3>> sm(buf.data());
    CHECK(blip2::view(sm).strides() == extents_t<2>{3, 12});
    check_same_2d(blip2::view(sm), sm);
    // writes through the view land in the mapped buffer
    blip2::view(m)(2, 3) = -1.0f;
    CHECK(buf[2 * 2 + 3 * 11] == -1.0f);
  }
  SUBCASE("const maps give const views") {
    Eigen::Map<const Eigen::MatrixXf> cm(buf.data(), 4, 2);
    auto v = blip2::view(cm);
    static_assert(std::is_same_v<decltype(v), tensor_view<const float, 2>>);
    CHECK(v.data() == buf.data());
    CHECK(v(3, 1) == cm(3, 1));
  }
  SUBCASE("Ref to a block") {
    Eigen::MatrixXf big(6, 5);
    fill_eigen(big, 9);
    Eigen::Ref<Eigen::MatrixXf> blk = big.block(1, 2, 3, 2);
    auto v = blip2::view(blk);
    CHECK(v.data() == &big(1, 2));
    CHECK(v.extents() == extents_t<2>{3, 2});
    CHECK(v.strides() == extents_t<2>{1, 6});
    check_same_2d(v, blk);
    v(0, 0) = 100.0f;
    CHECK(big(1, 2) == 100.0f);
  }
}

TEST_CASE("eigen: Tensor (ColMajor default and RowMajor), TensorMap, TensorFixedSize") {
  SUBCASE("ColMajor: the first index moves fastest") {
    Eigen::Tensor<float, 3> t(2, 3, 4);
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(i);
    auto v = blip2::view(t);
    static_assert(std::is_same_v<decltype(v), tensor_view<float, 3>>);
    CHECK(v.data() == t.data());
    CHECK(v.extents() == extents_t<3>{2, 3, 4});
    CHECK(v.strides() == extents_t<3>{1, 2, 6});
    check_same_3d(v, t);
    v(1, 2, 3) = -3.0f;
    CHECK(t(1, 2, 3) == -3.0f);
  }
  SUBCASE("RowMajor") {
    Eigen::Tensor<double, 3, Eigen::RowMajor> t(2, 3, 4);
    t.setRandom();
    auto v = blip2::view(t);
    CHECK(v.strides() == extents_t<3>{12, 4, 1});
    CHECK(v.is_contiguous());
    check_same_3d(v, t);
  }
  SUBCASE("TensorMap over a buffer, mutable and const") {
    std::vector<float> buf(24, 0.0f);
    Eigen::TensorMap<Eigen::Tensor<float, 3>> tm(buf.data(), 4, 3, 2);
    auto v = blip2::view(tm);
    CHECK(v.data() == buf.data());
    CHECK(v.strides() == extents_t<3>{1, 4, 12});
    v(3, 2, 1) = 5.0f;
    CHECK(tm(3, 2, 1) == 5.0f);
    check_same_3d(v, tm);
    Eigen::TensorMap<Eigen::Tensor<const float, 2, Eigen::RowMajor>> ctm(buf.data(), 6, 4);
    auto cv = blip2::view(ctm);
    static_assert(std::is_same_v<decltype(cv), tensor_view<const float, 2>>);
    CHECK(cv.strides() == extents_t<2>{4, 1});
    CHECK(cv(5, 3) == buf[23]);
  }
  SUBCASE("TensorFixedSize") {
    Eigen::TensorFixedSize<float, Eigen::Sizes<2, 3, 4>> t;
    t.setRandom();
    auto v = blip2::view(t);
    CHECK(v.strides() == extents_t<3>{1, 2, 6});
    check_same_3d(v, t);
  }
}

// ---------------------------------------------------------------------------------------------------
// xtensor

TEST_CASE("xtensor: xtensor<T, N>, row-major, column-major, extent-1 dimensions") {
  xt::xtensor<float, 3> a = xt::zeros<float>({2, 3, 4});
  for (std::size_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(i);
  auto v = blip2::view(a);
  static_assert(std::is_same_v<decltype(v), tensor_view<float, 3>>);
  CHECK(v.data() == a.data());
  CHECK(v.extents() == extents_t<3>{2, 3, 4});
  CHECK(v.strides() == extents_t<3>{12, 4, 1});
  check_same_xt(v, a);
  v(1, 0, 2) = 99.0f;
  CHECK(a(1, 0, 2) == 99.0f);

  // xtensor puts stride 0 on extent-1 dimensions
  xt::xtensor<float, 3> u = xt::zeros<float>({2, 1, 4});
  auto uv = blip2::view(u);
  CHECK(uv.strides() == extents_t<3>{static_cast<index_t>(u.strides()[0]), static_cast<index_t>(u.strides()[1]), 1});
  CHECK(uv.stride(1) == 0);
  CHECK(uv.is_contiguous());
  check_same_xt(uv, u);

  xt::xtensor<double, 2, xt::layout_type::column_major> c = xt::zeros<double>({3, 5});
  for (std::size_t i = 0; i < c.size(); ++i) c.data()[i] = static_cast<double>(i);
  auto cv = blip2::view(c);
  CHECK(cv.strides() == extents_t<2>{1, 3});
  check_same_xt(cv, c);

  const xt::xtensor<float, 3>& ca = a;
  auto cav = blip2::view(ca);
  static_assert(std::is_same_v<decltype(cav), tensor_view<const float, 3>>);
  CHECK(cav.data() == a.data());

  xt::xtensor_fixed<float, xt::xshape<2, 3>> fx = {{1, 2, 3}, {4, 5, 6}};
  auto fv = blip2::view(fx);
  CHECK(fv.data() == fx.data());
  CHECK(fv.strides() == extents_t<2>{3, 1});
  check_same_xt(fv, fx);
}

TEST_CASE("xtensor: xarray through view<Rank>, checked") {
  xt::xarray<float> a = xt::zeros<float>({3, 5});
  for (std::size_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(i);
  auto v = blip2::view<2>(a);
  CHECK(v.data() == a.data());
  CHECK(v.extents() == extents_t<2>{3, 5});
  CHECK(v.strides() == extents_t<2>{5, 1});
  check_same_xt(v, a);
  v(2, 4) = -4.0f;
  CHECK(a(2, 4) == -4.0f);
  try {
    (void)blip2::view<3>(a);
    FAIL("view<3> of a rank-2 xarray did not throw");
  } catch (const blip2::shape_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("(3, 5)") != std::string::npos);
    CHECK(msg.find("rank 3") != std::string::npos);
  }
  const xt::xarray<float>& ca = a;
  CHECK(blip2::view<2>(ca).data() == a.data());

  xt::xarray<double, xt::layout_type::column_major> c = xt::zeros<double>({2, 3, 4});
  for (std::size_t i = 0; i < c.size(); ++i) c.data()[i] = static_cast<double>(i);
  auto cv = blip2::view<3>(c);
  CHECK(cv.strides() == extents_t<3>{1, 2, 6});
  check_same_xt(cv, c);
}

TEST_CASE("xtensor: xt::adapt results honour their strides") {
  std::vector<float> buf(40);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);

  SUBCASE("pointer + std::array shape: xtensor_adaptor") {
    auto ad = xt::adapt(buf.data(), std::array<std::size_t, 2>{4, 5});
    auto v = blip2::view(ad);
    static_assert(decltype(v)::rank == 2);
    CHECK(v.data() == buf.data());
    CHECK(v.strides() == extents_t<2>{5, 1});
    check_same_xt(v, ad);
    v(3, 4) = -1.0f;
    CHECK(buf[19] == -1.0f);
  }
  SUBCASE("container + std::array shape, column-major") {
    auto ad = xt::adapt<xt::layout_type::column_major>(buf, std::array<std::size_t, 2>{4, 5});
    auto v = blip2::view(ad);
    CHECK(v.data() == buf.data());
    CHECK(v.strides() == extents_t<2>{1, 4});
    check_same_xt(v, ad);
  }
  SUBCASE("container + std::vector shape: xarray_adaptor, view<Rank>") {
    auto ad = xt::adapt(buf, std::vector<std::size_t>{2, 4, 5});
    auto v = blip2::view<3>(ad);
    CHECK(v.data() == buf.data());
    CHECK(v.strides() == extents_t<3>{20, 5, 1});
    check_same_xt(v, ad);
    CHECK_THROWS_AS((void)blip2::view<2>(ad), blip2::shape_error);
    // a temporary non-owning adaptor straight into a view
    auto tv = blip2::view<2>(xt::adapt(buf.data(), 40, xt::no_ownership(), std::vector<std::size_t>{8, 5}));
    CHECK(tv.data() == buf.data());
    CHECK(tv(7, 4) == buf[39]);
  }
  SUBCASE("explicit strides: every other column of a padded buffer") {
    // (4, 3) over a buffer with row pitch 10 and column step 2. xtensor 0.24 wants the size argument
    // to be the number of elements (the product of the shape), whatever the strides span.
    auto ad = xt::adapt(buf.data(), 12, xt::no_ownership(), std::array<std::size_t, 2>{4, 3},
                        std::array<std::ptrdiff_t, 2>{10, 2});
    auto v = blip2::view(ad);
    CHECK(v.strides() == extents_t<2>{10, 2});
    CHECK(v(3, 2) == buf[34]);
    check_same_xt(v, ad);
    auto xa = xt::adapt(buf.data(), 12, xt::no_ownership(), std::vector<std::size_t>{3, 4},
                        std::vector<std::ptrdiff_t>{1, 9});
    auto xv = blip2::view<2>(xa);
    CHECK(xv.strides() == extents_t<2>{1, 9});
    check_same_xt(xv, xa);
  }
  SUBCASE("const memory gives const views") {
    const std::vector<float>& cbuf = buf;
    auto ad = xt::adapt(cbuf.data(), std::array<std::size_t, 2>{8, 5});
    auto v = blip2::view(ad);
    static_assert(std::is_same_v<decltype(v), tensor_view<const float, 2>>);
    CHECK(v(7, 4) == 39.0f);
  }
}

// ---------------------------------------------------------------------------------------------------
// layer_norm_forward straight on Eigen and xtensor objects, against host_tensor

namespace {

constexpr index_t R = 5, C = 13;
constexpr double eps = 1e-5;

// The oracle: the reference backend on host_tensors holding x(r, c).
struct expected_ln {
  host_tensor<float, 2> out{{R, C}};
  host_tensor<float, 1> mean{{R}}, rstd{{R}};
  host_tensor<float, 1> w{{C}}, b{{C}};
  expected_ln() {
    host_tensor<float, 2> x({R, C});
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = input(r, c);
    for (index_t c = 0; c < C; ++c) {
      w(c) = 1.0f + 0.5f * value(21, static_cast<std::uint64_t>(c));
      b(c) = value(22, static_cast<std::uint64_t>(c));
    }
    blip2::reference_backend be;
    blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, x, w, b, eps);
  }
  static float input(index_t r, index_t c) { return 3.0f * value(20, static_cast<std::uint64_t>(r * C + c)) + 0.1f * r; }
};

// out(r, c) for every (r, c) of a rank-2 view equals the oracle's (the same kernel, the same arithmetic).
template <class V>
int mismatches(const expected_ln& ex, const V& out) {
  int wrong = 0;
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < C; ++c) wrong += out(r, c) != ex.out(r, c);
  return wrong;
}

}  // namespace

TEST_CASE("layer_norm_forward on Eigen objects equals layer_norm_forward on host_tensor") {
  const expected_ln ex;
  blip2::reference_backend be;
  Eigen::VectorXf w(C), b(C), mean(R), rstd(R);
  for (index_t c = 0; c < C; ++c) {
    w(c) = ex.w(c);
    b(c) = ex.b(c);
  }
  blip2::layer_norm_cache<float> cache{blip2::view(mean), blip2::view(rstd)};

  SUBCASE("row-major matrices") {
    row_matrix x(R, C), out(R, C);
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, out, cache, x, w, b, eps);
    CHECK(mismatches(ex, blip2::view(out)) == 0);
  }
  SUBCASE("column-major matrices, read and written through strides (1, R)") {
    Eigen::MatrixXf x(R, C), out(R, C);
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, out, cache, x, w, b, eps);
    CHECK(mismatches(ex, blip2::view(out)) == 0);
    for (index_t r = 0; r < R; ++r) CHECK(mean(r) == ex.mean(r));
    for (index_t r = 0; r < R; ++r) CHECK(rstd(r) == ex.rstd(r));
  }
  SUBCASE("a column-major (C, R) matrix seen through its transpose") {
    Eigen::MatrixXf xt(C, R), outt(C, R);  // column c of xt is row c of the input... transposed: xt(c, r)
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) xt(c, r) = expected_ln::input(r, c);
    auto x = blip2::transpose(blip2::view(xt));  // (R, C), strides (C, 1): dense rows
    CHECK(x.is_contiguous());
    blip2::layer_norm_forward(be, blip2::transpose(blip2::view(outt)), cache, x, w, b, eps);
    CHECK(mismatches(ex, blip2::transpose(blip2::view(outt))) == 0);
  }
  SUBCASE("a strided Map (padded rows) and a RowMajor rank-3 Tensor") {
    std::vector<float> buf(R * 16, -100.0f), obuf(R * 16, -100.0f);
    Eigen::Map<row_matrix, 0, Eigen::OuterStride<>> x(buf.data(), R, C, Eigen::OuterStride<>(16));
    Eigen::Map<row_matrix, 0, Eigen::OuterStride<>> out(obuf.data(), R, C, Eigen::OuterStride<>(16));
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, out, cache, x, w, b, eps);
    CHECK(mismatches(ex, blip2::view(out)) == 0);
    CHECK(obuf[C] == -100.0f);  // the padding is untouched

    Eigen::Tensor<float, 3, Eigen::RowMajor> x3(1, R, C), out3(1, R, C);  // (B, T, C)
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x3(0, r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, out3, cache, x3, w, b, eps);
    CHECK(mismatches(ex, blip2::slice(blip2::view(out3), 0)) == 0);
    // a ColMajor rank-3 tensor has no dense rows to flatten: a shape_error, not wrong numbers
    Eigen::Tensor<float, 3> cm3(2, 3, C), cmo(2, 3, C);
    cm3.setZero();
    CHECK_THROWS_AS(blip2::layer_norm_forward(be, cmo, blip2::layer_norm_cache<float>{blip2::view(mean), blip2::view(rstd)},
                                              cm3, w, b, eps),
                    blip2::shape_error);
  }
}

TEST_CASE("layer_norm_forward on xtensor objects equals layer_norm_forward on host_tensor") {
  const expected_ln ex;
  blip2::reference_backend be;
  xt::xtensor<float, 1> w = xt::zeros<float>({C}), mean = xt::zeros<float>({R}), rstd = xt::zeros<float>({R});
  xt::xarray<float> b = xt::zeros<float>({C});
  for (index_t c = 0; c < C; ++c) {
    w(c) = ex.w(c);
    b(c) = ex.b(c);
  }
  blip2::layer_norm_cache<float> cache{blip2::view(mean), blip2::view(rstd)};

  SUBCASE("xtensor<float, 3> (1, R, C), bias an xarray through view<1>") {
    xt::xtensor<float, 3> x = xt::zeros<float>({1, static_cast<int>(R), static_cast<int>(C)});
    xt::xtensor<float, 3> out = xt::zeros<float>({1, static_cast<int>(R), static_cast<int>(C)});
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(0, r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, out, cache, x, w, blip2::view<1>(b), eps);
    CHECK(mismatches(ex, blip2::slice(blip2::view(out), 0)) == 0);
    for (index_t r = 0; r < R; ++r) CHECK(mean(r) == ex.mean(r));
  }
  SUBCASE("column-major xtensor and a strided xt::adapt") {
    xt::xtensor<float, 2, xt::layout_type::column_major> x = xt::zeros<float>({R, C});
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = expected_ln::input(r, c);
    std::vector<float> obuf(R * C * 2, -100.0f);  // output: every other element
    auto out = xt::adapt(obuf.data(), static_cast<std::size_t>(R * C), xt::no_ownership(),  // size: see above
                         std::array<std::size_t, 2>{static_cast<std::size_t>(R), static_cast<std::size_t>(C)},
                         std::array<std::ptrdiff_t, 2>{2 * C, 2});
    blip2::layer_norm_forward(be, out, cache, x, w, blip2::view<1>(b), eps);
    CHECK(mismatches(ex, blip2::view(out)) == 0);
    CHECK(obuf[1] == -100.0f);
  }
  SUBCASE("xarray input and output through view<2>") {
    xt::xarray<float> x = xt::zeros<float>({R, C}), out = xt::zeros<float>({R, C});
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) x(r, c) = expected_ln::input(r, c);
    blip2::layer_norm_forward(be, blip2::view<2>(out), cache, blip2::view<2>(x), w, blip2::view<1>(b), eps);
    CHECK(mismatches(ex, blip2::view<2>(out)) == 0);
  }
}
