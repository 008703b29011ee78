// test_core: the core of blip2 without any backend but the reference one.
//   tensor_view (extents, strides, contiguity, element access, transpose, slice, reshape, flatten_rows),
//   host_tensor, blip2::view on user types (a tensor_traits specialisation and a .data()/.shape() type),
//   the concepts tensor / tensor_of / contiguous_tensor, const conversions, Philox-4x32-10 known answers,
//   the uniform draws, and the errors (kinds, messages, BLIP2_CHECK).
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/core/view.hpp"
#include "blip2/nn/layer_norm.hpp"

namespace {

// An odd user type: a column-major (BLAS-style) matrix whose columns are padded to a leading dimension
// ld >= rows. Element (i, j) lives at storage[i + j * ld]; it has no .shape(), so only a tensor_traits
// specialisation makes it a tensor.
struct blas_matrix {
  int rows = 0, cols = 0, ld = 0;
  std::vector<double> storage;
  blas_matrix(int r, int c, int ld_) : rows(r), cols(c), ld(ld_), storage(static_cast<std::size_t>(ld_ * c), -1.0) {}
  double& at(int i, int j) { return storage[static_cast<std::size_t>(i + j * ld)]; }
};

// An image with a padded row pitch, declared dense only in its channel dimension.
struct pitched_image {
  int height = 0, width = 0, pitch = 0;  // pitch >= width, in pixels
  std::vector<float> pixels;
};

// A dense row-major type declared contiguous through its traits.
struct dense_rows {
  std::vector<float> v;
  int rows = 0, cols = 0;
};

// A type with .data() and .shape() (std::array): a tensor without any specialisation.
struct image3 {
  std::array<std::size_t, 3> dims{};
  std::vector<float> px;
  float* data() { return px.data(); }
  const float* data() const { return px.data(); }
  std::array<std::size_t, 3> shape() const { return dims; }
};

// A type with a run-time rank: usable only through blip2::view<Rank>(x).
struct dyn_tensor {
  std::vector<std::size_t> dims;
  std::vector<float> d;
  float* data() { return d.data(); }
  const std::vector<std::size_t>& shape() const { return dims; }
};

// Not tensors.
struct no_shape {
  float* data() { return nullptr; }
};

}  // namespace

namespace blip2 {
template <>
struct tensor_traits<blas_matrix> {
  static tensor_view<double, 2> view(blas_matrix& m) {
    return {m.storage.data(), {m.rows, m.cols}, {1, m.ld}};  // (rows, cols), column-major with pitch ld
  }
  static tensor_view<const double, 2> view(const blas_matrix& m) {
    return {m.storage.data(), {m.rows, m.cols}, {1, m.ld}};
  }
};
template <>
struct tensor_traits<pitched_image> {
  static tensor_view<float, 2> view(pitched_image& m) {
    return {m.pixels.data(), {m.height, m.width}, {m.pitch, 1}};  // (H, W)
  }
  static tensor_view<const float, 2> view(const pitched_image& m) {
    return {m.pixels.data(), {m.height, m.width}, {m.pitch, 1}};
  }
};
template <>
struct tensor_traits<dense_rows> {
  static constexpr bool contiguous = true;
  static tensor_view<float, 2> view(dense_rows& m) { return {m.v.data(), {m.rows, m.cols}}; }
  static tensor_view<const float, 2> view(const dense_rows& m) { return {m.v.data(), {m.rows, m.cols}}; }
};
}  // namespace blip2

using blip2::extents_t;
using blip2::host_tensor;
using blip2::index_t;
using blip2::tensor_view;

// ---------------------------------------------------------------------------------------------------
// Concepts and conversions (compile time)

// tensor: views, host_tensor, traits-specialised types, .data() + .shape() types; const and references too.
static_assert(blip2::tensor<tensor_view<float, 2>>);
static_assert(blip2::tensor<tensor_view<const double, 4>>);
static_assert(blip2::tensor<host_tensor<float, 3>>);
static_assert(blip2::tensor<const host_tensor<float, 3>&>);
static_assert(blip2::tensor<blas_matrix>);
static_assert(blip2::tensor<const blas_matrix&>);
static_assert(blip2::tensor<image3>);
static_assert(blip2::tensor<image3&>);
// not tensors: no shape, a run-time rank (view<R> only), a bare pointer, a number, std::vector
static_assert(!blip2::tensor<std::vector<float>>);
static_assert(!blip2::tensor<float*>);
static_assert(!blip2::tensor<int>);
static_assert(!blip2::tensor<no_shape>);
static_assert(!blip2::tensor<dyn_tensor>);
static_assert(!blip2::tensor<std::array<float, 4>>);

// tensor_of<X, Elem, Rank>: element type without const, and rank.
static_assert(blip2::tensor_of<host_tensor<float, 3>, float, 3>);
static_assert(blip2::tensor_of<const host_tensor<float, 3>&, float, 3>);
static_assert(!blip2::tensor_of<host_tensor<float, 3>, double, 3>);
static_assert(!blip2::tensor_of<host_tensor<float, 3>, float, 2>);
static_assert(blip2::tensor_of<blas_matrix, double, 2>);
static_assert(blip2::tensor_of<image3, float, 3>);
static_assert(blip2::tensor_of<tensor_view<const float, 1>, float, 1>);
static_assert(!blip2::tensor_of<std::vector<float>, float, 1>);

// contiguous_tensor: dense row-major by construction only.
static_assert(blip2::contiguous_tensor<host_tensor<float, 2>>);
static_assert(blip2::contiguous_tensor<image3>);
static_assert(blip2::contiguous_tensor<dense_rows>);
static_assert(!blip2::contiguous_tensor<blas_matrix>);
static_assert(!blip2::contiguous_tensor<pitched_image>);
static_assert(!blip2::contiguous_tensor<tensor_view<float, 2>>);  // a view's layout is known at run time
static_assert(!blip2::contiguous_tensor<std::vector<float>>);

// view types: const objects give views of const elements.
static_assert(std::is_same_v<blip2::view_t<host_tensor<float, 2>>, tensor_view<float, 2>>);
static_assert(std::is_same_v<blip2::view_t<const host_tensor<float, 2>>, tensor_view<const float, 2>>);
static_assert(std::is_same_v<blip2::view_t<const blas_matrix>, tensor_view<const double, 2>>);
static_assert(std::is_same_v<blip2::view_t<const image3>, tensor_view<const float, 3>>);

// view<float> -> view<const float>, never the reverse, never across ranks, element types or spaces.
static_assert(std::is_convertible_v<tensor_view<float, 2>, tensor_view<const float, 2>>);
static_assert(!std::is_convertible_v<tensor_view<const float, 2>, tensor_view<float, 2>>);
static_assert(!std::is_constructible_v<tensor_view<float, 2>, tensor_view<const float, 2>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2>, tensor_view<const float, 3>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2>, tensor_view<const double, 2>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2, blip2::cuda_space>, tensor_view<float, 2>>);
static_assert(!std::is_convertible_v<tensor_view<float, 2>, tensor_view<float, 2, blip2::cuda_space>>);
static_assert(std::is_convertible_v<tensor_view<float, 2, blip2::cuda_space>, tensor_view<const float, 2, blip2::cuda_space>>);

// ---------------------------------------------------------------------------------------------------
// tensor_view

namespace {
std::vector<float> iota_vec(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return v;
}
}  // namespace

TEST_CASE("tensor_view: extents, strides, size, contiguity, element access") {
  auto buf = iota_vec(24);
  tensor_view<float, 3> v(buf.data(), {2, 3, 4});  // (2, 3, 4)
  CHECK(v.data() == buf.data());
  CHECK(v.extents() == extents_t<3>{2, 3, 4});
  CHECK(v.strides() == extents_t<3>{12, 4, 1});
  CHECK(v.extent(1) == 3);
  CHECK(v.stride(0) == 12);
  CHECK(v.size() == 24);
  CHECK_FALSE(v.empty());
  CHECK(v.is_contiguous());
  CHECK(decltype(v)::rank == 3);
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 3; ++j)
      for (index_t k = 0; k < 4; ++k) CHECK(v(i, j, k) == static_cast<float>(i * 12 + j * 4 + k));
  v(1, 2, 3) = -5.0f;  // writes land in the buffer
  CHECK(buf[23] == -5.0f);

  // explicit strides: a broadcast (stride 0) row and a padded pitch
  tensor_view<float, 2> bcast(buf.data(), {3, 4}, {0, 1});
  CHECK(bcast(2, 1) == bcast(0, 1));
  CHECK_FALSE(bcast.is_contiguous());
  tensor_view<float, 2> pitched(buf.data(), {3, 4}, {6, 1});  // rows of 4 in a pitch of 6
  CHECK(pitched(2, 3) == 15.0f);
  CHECK_FALSE(pitched.is_contiguous());
  // an extent-1 dimension may have any stride (xtensor gives it 0) and stays contiguous
  tensor_view<float, 3> unit(buf.data(), {2, 1, 4}, {4, 0, 1});
  CHECK(unit.is_contiguous());
  // an empty view
  tensor_view<float, 2> none(buf.data(), {0, 4});
  CHECK(none.empty());
  CHECK(none.size() == 0);
  CHECK(blip2::shape_string(v) == "(2, 3, 4)");
  CHECK(blip2::shape_string<1>({13}) == "(13)");
}

TEST_CASE("tensor_view: transpose, slice, reshape, flatten_rows") {
  auto buf = iota_vec(24);
  tensor_view<float, 3> v(buf.data(), {2, 3, 4});  // (2, 3, 4)

  SUBCASE("transpose swaps extents and strides, no copy") {
    auto t = blip2::transpose(v);  // (2, 4, 3)
    CHECK(t.data() == buf.data());
    CHECK(t.extents() == extents_t<3>{2, 4, 3});
    CHECK(t.strides() == extents_t<3>{12, 1, 4});
    CHECK_FALSE(t.is_contiguous());
    for (index_t i = 0; i < 2; ++i)
      for (index_t j = 0; j < 3; ++j)
        for (index_t k = 0; k < 4; ++k) CHECK(t(i, k, j) == v(i, j, k));
    auto t02 = blip2::transpose(v, 0, 2);  // (4, 3, 2)
    CHECK(t02.extents() == extents_t<3>{4, 3, 2});
    CHECK(t02(3, 1, 1) == v(1, 1, 3));
    CHECK(blip2::transpose(t).is_contiguous());  // twice: back to row-major
  }
  SUBCASE("slice takes one index of the first dimension") {
    auto s = blip2::slice(v, 1);  // (3, 4)
    CHECK(s.data() == buf.data() + 12);
    CHECK(s.extents() == extents_t<2>{3, 4});
    CHECK(s.strides() == extents_t<2>{4, 1});
    CHECK(s(2, 1) == v(1, 2, 1));
    auto row = blip2::slice(s, 2);  // (4)
    CHECK(row(3) == v(1, 2, 3));
    auto col = blip2::slice(blip2::transpose(s), 1);  // column 1 of s: (3) with stride 4
    CHECK(col.stride(0) == 4);
    CHECK(col(2) == s(2, 1));
  }
  SUBCASE("reshape views dense data with other extents") {
    auto r = blip2::reshape<2>(v, {6, 4});  // (6, 4)
    CHECK(r.data() == buf.data());
    CHECK(r.strides() == extents_t<2>{4, 1});
    CHECK(r(5, 3) == 23.0f);
    auto flat = blip2::reshape<1>(v, {24});
    CHECK(flat(17) == 17.0f);
    // a size mismatch names both shapes
    try {
      (void)blip2::reshape<2>(v, {5, 5});
      FAIL("reshape to another size did not throw");
    } catch (const blip2::shape_error& e) {
      const std::string msg = e.what();
      CHECK(msg.find("(2, 3, 4)") != std::string::npos);
      CHECK(msg.find("(5, 5)") != std::string::npos);
    }
    // a transposed (non-contiguous) view cannot be reshaped
    CHECK_THROWS_AS((void)blip2::reshape<2>(blip2::transpose(v), {6, 4}), blip2::shape_error);
  }
  SUBCASE("flatten_rows merges the leading dimensions") {
    auto f = blip2::flatten_rows(v);  // (6, 4)
    CHECK(f.data() == buf.data());
    CHECK(f.extents() == extents_t<2>{6, 4});
    CHECK(f.strides() == extents_t<2>{4, 1});
    CHECK(f(4, 2) == v(1, 1, 2));
    // rank 2 stays as it is, strides included
    auto t2 = blip2::transpose(blip2::slice(v, 0));
    auto f2 = blip2::flatten_rows(t2);
    CHECK(f2.strides() == t2.strides());
    // padded rows: the leading dimensions are dense with respect to each other, the rows are not dense
    std::vector<float> big(2 * 3 * 8, 0.0f);
    tensor_view<float, 3> padded(big.data(), {2, 3, 5}, {24, 8, 1});  // rows of 5 in a pitch of 8
    auto fp = blip2::flatten_rows(padded);                             // (6, 5)
    CHECK(fp.extents() == extents_t<2>{6, 5});
    CHECK(fp.strides() == extents_t<2>{8, 1});
    // leading dimensions that are not dense together cannot be merged
    tensor_view<float, 3> gaps(big.data(), {2, 3, 4}, {20, 4, 1});
    CHECK_THROWS_AS((void)blip2::flatten_rows(gaps), blip2::shape_error);
    CHECK_THROWS_AS((void)blip2::flatten_rows(blip2::transpose(v, 0, 1)), blip2::shape_error);
  }
}

TEST_CASE("host_tensor: owning, row-major, value-initialised, deep copies") {
  host_tensor<float, 3> t({2, 3, 4});
  CHECK(t.shape() == extents_t<3>{2, 3, 4});
  CHECK(t.size() == 24);
  CHECK(t.extent(2) == 4);
  CHECK(t[23] == 0.0f);
  t(1, 2, 3) = 7.0f;
  CHECK(t[23] == 7.0f);
  CHECK(t.data()[23] == 7.0f);
  auto v = t.view();
  CHECK(v.data() == t.data());
  CHECK(v.is_contiguous());
  CHECK(blip2::view(t).data() == t.data());
  const auto& ct = t;
  static_assert(std::is_same_v<decltype(ct.view()), tensor_view<const float, 3>>);
  CHECK(ct(1, 2, 3) == 7.0f);

  host_tensor<double, 2> filled({2, 2}, 1.5);
  CHECK(filled(1, 1) == 1.5);
  filled.fill(-2.0);
  CHECK(filled[3] == -2.0);
  auto copy = filled;  // deep copy
  copy(0, 0) = 9.0;
  CHECK(filled(0, 0) == -2.0);
  CHECK(copy.data() != filled.data());
  CHECK(copy.storage().size() == 4);

  host_tensor<float, 2> empty({0, 5});
  CHECK(empty.size() == 0);
  using shape2 = host_tensor<float, 2>;
  CHECK_THROWS_AS(shape2({-1, 3}), blip2::shape_error);
}

TEST_CASE("blip2::view on user types") {
  SUBCASE("a column-major matrix with a padded leading dimension, through tensor_traits") {
    blas_matrix m(3, 2, 5);  // 3 x 2, columns padded to 5
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 2; ++j) m.at(i, j) = 10.0 * i + j;
    auto v = blip2::view(m);
    static_assert(std::is_same_v<decltype(v), tensor_view<double, 2>>);
    CHECK(v.data() == m.storage.data());
    CHECK(v.extents() == extents_t<2>{3, 2});
    CHECK(v.strides() == extents_t<2>{1, 5});
    CHECK_FALSE(v.is_contiguous());
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 2; ++j) CHECK(v(i, j) == m.at(i, j));
    v(2, 1) = -1.0;
    CHECK(m.at(2, 1) == -1.0);
    // its transpose is a dense-rows view with a pitch: rows of 3 in a pitch of 5
    auto t = blip2::transpose(v);
    CHECK(t.strides() == extents_t<2>{5, 1});
    const blas_matrix& cm = m;
    auto cv = blip2::view(cm);
    static_assert(std::is_same_v<decltype(cv), tensor_view<const double, 2>>);
    CHECK(cv(1, 1) == 11.0);
    CHECK(blip2::view<2>(m).data() == m.storage.data());  // the explicit-rank form works too
  }
  SUBCASE("an image with a padded row pitch") {
    pitched_image img{2, 3, 4, std::vector<float>(8, 0.0f)};
    img.pixels[4 + 2] = 5.0f;  // row 1, column 2
    auto v = blip2::view(img);
    CHECK(v(1, 2) == 5.0f);
    CHECK(v.strides() == extents_t<2>{4, 1});
  }
  SUBCASE("a type with .data() and .shape()") {
    image3 img{{2, 2, 3}, iota_vec(12)};
    auto v = blip2::view(img);
    static_assert(std::is_same_v<decltype(v), tensor_view<float, 3>>);
    CHECK(v.data() == img.px.data());
    CHECK(v.extents() == extents_t<3>{2, 2, 3});
    CHECK(v.strides() == extents_t<3>{6, 3, 1});
    CHECK(v(1, 0, 2) == 8.0f);
    const image3& cimg = img;
    static_assert(std::is_same_v<decltype(blip2::view(cimg)), tensor_view<const float, 3>>);
    // a view of a view is the same view
    auto vv = blip2::view(v);
    CHECK(vv.data() == v.data());
    CHECK(vv.strides() == v.strides());
  }
  SUBCASE("a type with a run-time rank: view<Rank>, checked") {
    dyn_tensor d{{2, 3}, iota_vec(6)};
    auto v = blip2::view<2>(d);
    CHECK(v.extents() == extents_t<2>{2, 3});
    CHECK(v(1, 2) == 5.0f);
    try {
      (void)blip2::view<3>(d);
      FAIL("view<3> of a rank-2 tensor did not throw");
    } catch (const blip2::shape_error& e) {
      const std::string msg = e.what();
      CHECK(msg.find("rank 2") != std::string::npos);
      CHECK(msg.find("rank 3") != std::string::npos);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Philox-4x32-10: the known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds)

TEST_CASE("philox4x32-10 known answers (Random123)") {
  using P = blip2::philox4x32;
  using C = P::counter_type;
  CHECK(P::generate(C{0, 0, 0, 0}, {0, 0}) == C{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(P::generate(C{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}) ==
        C{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  CHECK(P::generate(C{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}) ==
        C{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
  // constexpr: usable at compile time
  static_assert(P::generate(C{0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5u);
  // random_bits(seed, counter) packs the counter into words 0-1 and the seed into the key
  CHECK(blip2::random_bits(0, 0) == C{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(blip2::random_bits(0x299f31d0a4093822ull, 7) == P::generate(C{7, 0, 0, 0}, {0xa4093822u, 0x299f31d0u}));
  CHECK(blip2::random_bits(1, 1ull << 32) == P::generate(C{0, 1, 0, 0}, {1, 0}));
}

TEST_CASE("uniform_float and uniform_double: range, determinism, rough uniformity") {
  double sum = 0;
  int low = 0, outside = 0;
  float lo = 1.0f, hi = 0.0f;
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) {
    const float u = blip2::uniform_float(42, static_cast<std::uint64_t>(i));
    outside += !(u >= 0.0f && u < 1.0f);
    lo = u < lo ? u : lo;
    hi = u > hi ? u : hi;
    sum += u;
    low += u < 0.25f;
    const double d = blip2::uniform_double(42, static_cast<std::uint64_t>(i));
    outside += !(d >= 0.0 && d < 1.0);
  }
  CHECK(outside == 0);
  CHECK(sum / n == doctest::Approx(0.5).epsilon(0.02));
  CHECK(static_cast<double>(low) / n == doctest::Approx(0.25).epsilon(0.05));
  CHECK(lo < 0.001f);
  CHECK(hi > 0.999f);
  // a pure function of (seed, counter)
  CHECK(blip2::uniform_float(7, 123) == blip2::uniform_float(7, 123));
  CHECK(blip2::uniform_float(7, 123) != blip2::uniform_float(8, 123));
  CHECK(blip2::uniform_float(7, 123) != blip2::uniform_float(7, 124));
  // the largest value it can return is 1 - 2^-24 (24 bits, exactly representable)
  CHECK(static_cast<float>(0xffffffu) * (1.0f / 16777216.0f) < 1.0f);
}

// ---------------------------------------------------------------------------------------------------
// Errors

static_assert(std::is_base_of_v<blip2::error, blip2::shape_error>);
static_assert(std::is_base_of_v<blip2::error, blip2::value_error>);
static_assert(std::is_base_of_v<blip2::error, blip2::format_error>);
static_assert(std::is_base_of_v<blip2::error, blip2::backend_error>);
static_assert(std::is_base_of_v<std::runtime_error, blip2::error>);
static_assert(std::is_base_of_v<std::runtime_error, blip2::shape_error>);
static_assert(std::is_base_of_v<std::runtime_error, blip2::backend_error>);

TEST_CASE("layer_norm_forward: a wrong weight shape is a shape_error naming the tensor and both shapes") {
  blip2::reference_backend be;
  host_tensor<float, 2> inp({2, 13}, 1.0f), out({2, 13});
  host_tensor<float, 1> weight({7}, 1.0f), bias({13}), mean({2}), rstd({2});
  blip2::layer_norm_cache<float> cache{mean.view(), rstd.view()};
  try {
    blip2::layer_norm_forward(be, out, cache, inp, weight, bias, 1e-5);
    FAIL("a (7) weight for 13 channels did not throw");
  } catch (const blip2::shape_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("layer_norm_forward") != std::string::npos);
    CHECK(msg.find("weight") != std::string::npos);
    CHECK(msg.find("(7)") != std::string::npos);
    CHECK(msg.find("(13)") != std::string::npos);
  }
  // caught as the base classes too
  CHECK_THROWS_AS(blip2::layer_norm_forward(be, out, cache, inp, weight, bias, 1e-5), blip2::error);
  CHECK_THROWS_AS(blip2::layer_norm_forward(be, out, cache, inp, weight, bias, 1e-5), std::runtime_error);
  // a wrong cache length names the cache and both shapes
  host_tensor<float, 1> w13({13}, 1.0f), mean3({3});
  try {
    blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean3.view(), rstd.view()}, inp, w13, bias,
                              1e-5);
    FAIL("a (3) mean for 2 rows did not throw");
  } catch (const blip2::shape_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("cache.mean") != std::string::npos);
    CHECK(msg.find("(3)") != std::string::npos);
    CHECK(msg.find("(2)") != std::string::npos);
  }
  // with right shapes it runs
  CHECK_NOTHROW(blip2::layer_norm_forward(be, out, cache, inp, w13, bias, 1e-5));
}

TEST_CASE("layer_norm_forward: a negative eps is a value_error") {
  blip2::reference_backend be;
  host_tensor<double, 2> inp({3, 4}, 1.0), out({3, 4});
  host_tensor<double, 1> weight({4}, 1.0), bias({4}), mean({3}), rstd({3});
  try {
    blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<double>{mean.view(), rstd.view()}, inp, weight, bias,
                              -1e-5);
    FAIL("a negative eps did not throw");
  } catch (const blip2::value_error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("eps") != std::string::npos);
    CHECK(msg.find("-1e-05") != std::string::npos);
  }
}

TEST_CASE("BLIP2_CHECK: streams its parts into the message, evaluates the condition once, throws the kind asked") {
  int evaluated = 0;
  auto count = [&] {
    ++evaluated;
    return true;
  };
  BLIP2_CHECK(count(), blip2::value_error, "never");
  CHECK(evaluated == 1);

  try {
    BLIP2_CHECK(1 + 1 == 3, blip2::value_error, "p = ", 2.5, " for id ", 42, " of '", std::string("vocab"), "'");
    FAIL("BLIP2_CHECK(false) did not throw");
  } catch (const blip2::value_error& e) {
    CHECK(std::string(e.what()) == "p = 2.5 for id 42 of 'vocab'");
  }
  // each kind is thrown as itself and caught as blip2::error
  CHECK_THROWS_AS([] { BLIP2_CHECK(false, blip2::shape_error, "s"); }(), blip2::shape_error);
  CHECK_THROWS_AS([] { BLIP2_CHECK(false, blip2::format_error, "f.safetensors at offset ", 8, ": expected a header"); }(),
                  blip2::format_error);
  CHECK_THROWS_AS([] { BLIP2_CHECK(false, blip2::backend_error, "onednn: status ", 3); }(), blip2::backend_error);
  CHECK_THROWS_WITH_AS([] { BLIP2_CHECK(false, blip2::format_error, "f.bin at offset ", 16, ": expected 'F'"); }(),
                       "f.bin at offset 16: expected 'F'", blip2::error);
  // inside an if/else without braces it is one statement
  bool reached_else = false;
  if (false)
    BLIP2_CHECK(false, blip2::value_error, "x");
  else
    reached_else = true;
  CHECK(reached_else);
}
