// test_dropout_rng: the statistics and the determinism of the seeded dropout (nn/dropout.hpp).
//
// The keep rule is `uniform_float(seed, i) >= float(p)` on the flat row-major index i; these tests check that
// the op follows it exactly, that the kept fraction is what p promises, and that the mask depends on
// nothing but (seed, i): not on the thread count, the precision, or forward versus backward.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/dropout.hpp"

using namespace blip2;

namespace {
host_tensor<float, 2> ones(index_t R, index_t C) { return host_tensor<float, 2>({R, C}, 1.0f); }
}  // namespace

TEST_CASE("dropout: the kept fraction is 1 - p within five binomial standard deviations") {
  // K kept out of n ~ Binomial(n, 1 - p): sd = sqrt(n p (1 - p)). At 5 sd a correct generator fails with
  // probability below 1e-6 (and the seed is fixed, so the outcome is deterministic); a rule that drifts by
  // 0.5% of n (1000 elements here) is caught for every p tested.
  reference_backend be;
  const index_t R = 400, C = 500, n = R * C;
  auto inp = ones(R, C);
  host_tensor<float, 2> out({R, C});
  for (double p : {0.1, 0.3, 0.5, 0.9}) {
    dropout_forward(be, out, inp, p, 12345);
    index_t kept = 0, wrong_scale = 0;
    const float scale = 1.0f / (1.0f - static_cast<float>(p));
    for (index_t k = 0; k < n; ++k) {
      if (out[k] != 0.0f) {
        ++kept;
        wrong_scale += out[k] != scale;  // kept elements carry exactly 1 / (1 - p)
      }
    }
    CHECK(wrong_scale == 0);
    const double expected = static_cast<double>(n) * (1.0 - p);
    const double sd = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
    CAPTURE(p);
    CAPTURE(kept);
    CHECK(std::abs(static_cast<double>(kept) - expected) <= 5.0 * sd);
  }
}

TEST_CASE("dropout: element i is kept iff uniform_float(seed, i) >= float(p), i the flat row-major index") {
  reference_backend be;
  const std::uint64_t seed = 99;
  const double p = 0.4;
  host_tensor<double, 3> inp({2, 7, 13}, 2.0);
  host_tensor<double, 3> out({2, 7, 13});
  dropout_forward(be, out, inp, p, seed);
  index_t mismatches = 0;
  for (index_t i = 0; i < inp.size(); ++i) {
    const bool keep = uniform_float(seed, static_cast<std::uint64_t>(i)) >= static_cast<float>(p);
    mismatches += out[i] != (keep ? 2.0 * (1.0 / (1.0 - p)) : 0.0);
  }
  CHECK(mismatches == 0);
  // a transposed view: the index is that of the logical (viewed) tensor, not of the memory
  host_tensor<double, 2> base({13, 7}, 1.0);
  auto t = transpose(base.view());  // (7, 13), strides (1, 7)
  host_tensor<double, 2> tout({7, 13});
  dropout_forward(be, tout, t, p, seed);
  for (index_t r = 0; r < 7; ++r)
    for (index_t c = 0; c < 13; ++c)
      mismatches += (tout(r, c) != 0.0) != (uniform_float(seed, static_cast<std::uint64_t>(r * 13 + c)) >= 0.4f);
  CHECK(mismatches == 0);
}

TEST_CASE("dropout: the mask is the same with 1 and 2 OpenMP threads, in float and double, forward and backward") {
  reference_backend be;
  const index_t R = 257, C = 129;  // odd sizes: the static schedule splits rows unevenly
  const double p = 0.3;
  const std::uint64_t seed = 7;
  auto inp = ones(R, C);
  host_tensor<float, 2> out1({R, C}), out2({R, C}), dinp({R, C});
  host_tensor<double, 2> outd({R, C});
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  dropout_forward(be, out1, inp, p, seed);
  omp_set_num_threads(2);
  dropout_forward(be, out2, inp, p, seed);
  omp_set_num_threads(saved);
#else
  dropout_forward(be, out1, inp, p, seed);
  dropout_forward(be, out2, inp, p, seed);
  MESSAGE("built without OpenMP: the two runs are single-threaded");
#endif
  CHECK(out1.storage() == out2.storage());
  dropout_forward(be, outd, host_tensor<double, 2>({R, C}, 1.0), p, seed);
  dropout_backward(be, dinp, inp, p, seed);  // dout = 1: dinp is the mask times the scale
  index_t precision_mismatches = 0, backward_mismatches = 0;
  for (index_t k = 0; k < R * C; ++k) {
    precision_mismatches += (outd[k] != 0.0) != (out1[k] != 0.0f);
    backward_mismatches += dinp[k] != out1[k];
  }
  CHECK(precision_mismatches == 0);
  CHECK(backward_mismatches == 0);
}

TEST_CASE("dropout: p = 0 is the identity, other seeds give other masks, p outside [0, 1) is a value_error") {
  reference_backend be;
  host_tensor<float, 2> inp({5, 7});
  for (index_t k = 0; k < inp.size(); ++k) inp[k] = static_cast<float>(k) - 17.5f;
  host_tensor<float, 2> out({5, 7}), other({5, 7});
  dropout_forward(be, out, inp, 0.0, 3);
  CHECK(out.storage() == inp.storage());
  dropout_forward(be, out, inp, 0.5, 3);
  dropout_forward(be, other, inp, 0.5, 4);
  CHECK(out.storage() != other.storage());
  CHECK_THROWS_AS(dropout_forward(be, out, inp, 1.0, 3), value_error);
  CHECK_THROWS_AS(dropout_forward(be, out, inp, -0.1, 3), value_error);
  CHECK_THROWS_AS(dropout_forward(be, out, inp, std::numeric_limits<double>::quiet_NaN(), 3), value_error);
  CHECK_THROWS_AS(dropout_backward(be, out, inp, 1.5, 3), value_error);
  host_tensor<float, 2> wrong({7, 5});
  CHECK_THROWS_AS(dropout_forward(be, wrong, inp, 0.1, 3), shape_error);
}
