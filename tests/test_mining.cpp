// test_mining: the ITM hard-negative samplers (mining/*.hpp).
//
// - no sampler ever returns a positive (the pair's own column, or any column with its image id);
// - the BLIP-2 sampler's weights are LAVIS's softmax with the positives at -10000, and its empirical
//   frequencies over many seeds match them: with N draws, a count is Binomial(N, p), so
//   |freq - p| <= 5 sqrt(p (1 - p) / N) + 1 / N (a 5-sigma band: a false failure has probability below 1e-6
//   per check, and the seeds are fixed, so the test is deterministic anyway);
// - draws depend on (seed, row) only: the same with 1 and 2 OpenMP threads, the same for the same seed,
//   different for different seeds and different ranks;
// - the hardest, uniform and fixed samplers; every error the header promises.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/mining/fixed_sampler.hpp"
#include "blip2/mining/hardest_sampler.hpp"
#include "blip2/mining/uniform_sampler.hpp"
#include "harness/buffers.hpp"

using namespace blip2;

static_assert(negative_sampler<blip2_sampler> && negative_sampler<blip2_sampler, double>);
static_assert(negative_sampler<hardest_sampler> && negative_sampler<uniform_sampler> && negative_sampler<fixed_sampler>);
static_assert(!negative_sampler<int>);

namespace {

// Random similarity logits (B, Bi) and (B, Bt), owned.
struct sims {
  index_t B, Bi, Bt;
  std::vector<double> i2t, t2i;
  std::vector<index_t> ids;
  sims(index_t b, index_t bi, index_t bt, std::uint64_t seed, double sd = 3.0) : B(b), Bi(bi), Bt(bt) {
    blip2::testing::rng r(seed);
    i2t.resize(static_cast<std::size_t>(B * Bt));
    t2i.resize(static_cast<std::size_t>(B * Bi));
    for (auto& v : i2t) v = r.normal(sd);
    for (auto& v : t2i) v = r.normal(sd);
  }
  negative_sampling_inputs<double> inputs(index_t off = 0, std::uint64_t seed = 0, bool with_ids = false) const {
    negative_sampling_inputs<double> in;
    in.sim_i2t = {i2t.data(), {B, Bt}};
    in.sim_t2i = {t2i.data(), {B, Bi}};
    if (with_ids) in.image_ids = {ids.data(), {static_cast<index_t>(ids.size())}};
    in.local_offset = off;
    in.seed = seed;
    return in;
  }
};

template <class S>
std::pair<std::vector<index_t>, std::vector<index_t>> draw(S& s, const negative_sampling_inputs<double>& in) {
  const index_t B = in.sim_i2t.extent(0);
  std::vector<index_t> ni(static_cast<std::size_t>(B), -1), nt(static_cast<std::size_t>(B), -1);
  s.sample(in, tensor_view<index_t, 1>(ni.data(), {B}), tensor_view<index_t, 1>(nt.data(), {B}));
  return {ni, nt};
}

// The message of the value_error/shape_error f throws ("" when it throws nothing).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const blip2::error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("mining: no sampler returns a positive") {
  sims s(6, 10, 10, 1);
  s.ids = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1};  // columns j and j + 4 show the same image
  auto check = [&](auto& sampler, const char* name) {
    for (bool with_ids : {false, true})
      for (std::uint64_t seed = 0; seed < 200; ++seed) {
        const auto in = s.inputs(2, seed, with_ids);
        auto [ni, nt] = draw(sampler, in);
        for (index_t b = 0; b < s.B; ++b) {
          CAPTURE(name);
          CAPTURE(with_ids);
          CAPTURE(b);
          REQUIRE((ni[b] >= 0 && ni[b] < s.Bi && nt[b] >= 0 && nt[b] < s.Bt));
          CHECK_FALSE(is_positive(in, b, ni[b]));
          CHECK_FALSE(is_positive(in, b, nt[b]));
          if (!with_ids) CHECK((ni[b] != 2 + b && nt[b] != 2 + b));
          else CHECK((s.ids[ni[b]] != s.ids[2 + b] && s.ids[nt[b]] != s.ids[2 + b]));
        }
      }
  };
  blip2_sampler a;
  hardest_sampler h;
  uniform_sampler u;
  check(a, "blip2");
  check(h, "hardest");
  check(u, "uniform");
}

TEST_CASE("mining: BLIP-2 weights are LAVIS's softmax with the positives at -10000") {
  sims s(3, 7, 7, 2);
  s.ids = {4, 5, 4, 6, 7, 5, 8};
  for (bool with_ids : {false, true}) {
    const auto in = s.inputs(1, 0, with_ids);
    for (auto d : {negative_direction::image_for_text, negative_direction::text_for_image}) {
      std::vector<double> w(21);
      blip2_sampler::weights(in, d, tensor_view<double, 2>(w.data(), {3, 7}));
      const auto& sim = d == negative_direction::image_for_text ? s.t2i : s.i2t;
      for (index_t b = 0; b < 3; ++b) {
        // LAVIS: sim.masked_fill_(mask, -10000) (or fill_diagonal_ of the local block); F.softmax(sim, dim=1)
        std::vector<double> z(7);
        double m = -1e300, sum = 0;
        for (index_t j = 0; j < 7; ++j) {
          z[j] = is_positive(in, b, j) ? -10000.0 : sim[b * 7 + j];
          m = std::max(m, z[j]);
        }
        for (index_t j = 0; j < 7; ++j) sum += std::exp(z[j] - m);
        for (index_t j = 0; j < 7; ++j) CHECK(w[b * 7 + j] == doctest::Approx(std::exp(z[j] - m) / sum).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("mining: BLIP-2 sampler frequencies match its weights (binomial, 5 sigma)") {
  sims s(2, 5, 6, 3, 1.0);  // moderate logits: every negative has visible mass
  const index_t N = 20000;
  blip2_sampler sampler;
  std::vector<double> ci(2 * 5, 0), ct(2 * 6, 0);
  for (index_t k = 0; k < N; ++k) {
    auto [ni, nt] = draw(sampler, s.inputs(0, static_cast<std::uint64_t>(k) * 7919 + 11));
    for (index_t b = 0; b < 2; ++b) {
      ci[b * 5 + ni[b]] += 1;
      ct[b * 6 + nt[b]] += 1;
    }
  }
  std::vector<double> wi(10), wt(12);
  const auto in = s.inputs();
  blip2_sampler::weights(in, negative_direction::image_for_text, tensor_view<double, 2>(wi.data(), {2, 5}));
  blip2_sampler::weights(in, negative_direction::text_for_image, tensor_view<double, 2>(wt.data(), {2, 6}));
  auto compare = [&](const std::vector<double>& count, const std::vector<double>& p) {
    for (std::size_t j = 0; j < p.size(); ++j) {
      const double freq = count[j] / N;
      const double tol = 5 * std::sqrt(p[j] * (1 - p[j]) / N) + 1.0 / N;
      CAPTURE(j);
      CAPTURE(p[j]);
      CHECK(std::abs(freq - p[j]) <= tol);
    }
  };
  compare(ci, wi);
  compare(ct, wt);
  CHECK(ci[0] == 0);  // the positives (diagonal) are never drawn
  CHECK(ct[6 + 1] == 0);
}

TEST_CASE("mining: uniform sampler frequencies are uniform over the negatives") {
  sims s(1, 5, 5, 4);
  s.ids = {1, 2, 1, 3, 4};  // pair 0's image also in column 2: negatives are columns 1, 3, 4
  const index_t N = 9000;
  uniform_sampler u;
  std::vector<double> c(5, 0);
  for (index_t k = 0; k < N; ++k) c[draw(u, s.inputs(0, static_cast<std::uint64_t>(k), true)).first[0]] += 1;
  CHECK(c[0] == 0);
  CHECK(c[2] == 0);
  const double p = 1.0 / 3, tol = 5 * std::sqrt(p * (1 - p) / N) + 1.0 / N;
  for (index_t j : {1, 3, 4}) CHECK(std::abs(c[j] / N - p) <= tol);
}

TEST_CASE("mining: draws depend on (seed, row) only") {
  sims s(64, 64, 64, 5, 1.0);
  for (int which = 0; which < 2; ++which) {
    auto run = [&](int threads, std::uint64_t seed) {
#if defined(_OPENMP)
      omp_set_num_threads(threads);
#else
      (void)threads;
#endif
      const auto in = s.inputs(0, seed);
      if (which == 0) {
        blip2_sampler a;
        return draw(a, in);
      }
      uniform_sampler u;
      return draw(u, in);
    };
    const auto one = run(1, 42), two = run(2, 42), again = run(2, 42), other = run(2, 43);
    CAPTURE(which);
    CHECK(one == two);
    CHECK(two == again);
    CHECK(one.first != other.first);
    CHECK(one.second != other.second);
    CHECK(one.first != one.second);  // images and texts use different counters
  }
#if defined(_OPENMP)
  omp_set_num_threads(2);
#endif
  // the counter is the GLOBAL row (off + b): rank 1 of 2 (off = 64) draws from other counters than rank 0
  sims two_ranks(64, 128, 128, 5, 1.0);
  uniform_sampler u;
  const auto in = two_ranks.inputs(64, 42);
  auto [ni, nt] = draw(u, in);
  for (index_t b = 0; b < 64; ++b) {
    // 127 negatives per row (every column but 64 + b): the k-th of them, k = floor(u * 127)
    const double ui = uniform_double(42, negative_draw_counter(negative_direction::image_for_text, 64 + b));
    const double ut = uniform_double(42, negative_draw_counter(negative_direction::text_for_image, 64 + b));
    auto kth = [&](double x) {
      const index_t k = static_cast<index_t>(x * 127);
      return k < 64 + b ? k : k + 1;  // skip the positive column
    };
    CHECK(ni[b] == kth(ui));
    CHECK(nt[b] == kth(ut));
  }
}

TEST_CASE("mining: hardest sampler takes the largest non-positive") {
  std::vector<double> i2t{5.0, 1.0, 3.0, 3.0,  //  image 0: its own text (5) is skipped; 3 and 3 tie -> column 2
                          0.0, 9.0, -1.0, 2.0},
      t2i{0.5, 0.1, 0.9, 0.2,  //   text 0
          4.0, 8.0, 4.0, 1.0};  // text 1: own image (8) skipped; tie 4, 4 -> column 0
  negative_sampling_inputs<double> in;
  in.sim_i2t = {i2t.data(), {2, 4}};
  in.sim_t2i = {t2i.data(), {2, 4}};
  hardest_sampler h;
  auto [ni, nt] = draw(h, in);
  CHECK(ni == std::vector<index_t>{2, 0});
  CHECK(nt == std::vector<index_t>{2, 3});
  // with ids, column 2 is image 0's image too: next best
  std::vector<index_t> ids{10, 11, 10, 12};
  in.image_ids = {ids.data(), {4}};
  auto [ni2, nt2] = draw(h, in);
  CHECK(ni2 == std::vector<index_t>{3, 0});
  CHECK(nt2 == std::vector<index_t>{3, 3});
}

TEST_CASE("mining: fixed sampler returns its indices and rejects bad ones") {
  sims s(3, 5, 5, 6);
  fixed_sampler f({4, 0, 1}, {1, 3, 0});
  auto [ni, nt] = draw(f, s.inputs());
  CHECK(ni == std::vector<index_t>{4, 0, 1});
  CHECK(nt == std::vector<index_t>{1, 3, 0});
  fixed_sampler out_of_range({4, 0, 5}, {1, 3, 0});
  CHECK_THROWS_AS(draw(out_of_range, s.inputs()), value_error);
  fixed_sampler negative_index({4, 0, 1}, {-1, 3, 0});
  CHECK_THROWS_AS(draw(negative_index, s.inputs()), value_error);
  fixed_sampler positive({4, 1, 1}, {1, 3, 0});  // text 1's own image
  CHECK(error_of([&] { draw(positive, s.inputs()); }).find("neg_image[1] = 1 is a positive") != std::string::npos);
  positive.allow_positives = true;
  CHECK(draw(positive, s.inputs()).first == std::vector<index_t>{4, 1, 1});
  fixed_sampler too_few({4, 0}, {1, 3});
  CHECK_THROWS_AS(draw(too_few, s.inputs()), shape_error);
}

TEST_CASE("mining: errors") {
  blip2_sampler a;
  SUBCASE("a NaN or an infinity names its matrix, row and column") {
    sims s(3, 4, 4, 7);
    s.t2i[1 * 4 + 2] = std::numeric_limits<double>::quiet_NaN();
    const auto msg = error_of([&] { draw(a, s.inputs()); });
    CHECK(msg.find("sim_t2i(1, 2)") != std::string::npos);
    CHECK_THROWS_AS(draw(a, s.inputs()), value_error);
    sims s2(3, 4, 4, 7);
    s2.i2t[2 * 4 + 0] = std::numeric_limits<double>::infinity();
    CHECK(error_of([&] { draw(a, s2.inputs()); }).find("sim_i2t(2, 0)") != std::string::npos);
    hardest_sampler h;
    uniform_sampler u;
    CHECK_THROWS_AS(draw(h, s2.inputs()), value_error);
    CHECK_THROWS_AS(draw(u, s2.inputs()), value_error);
  }
  SUBCASE("a batch of one pair has no negative") {
    sims s(1, 1, 1, 8);
    const auto msg = error_of([&] { draw(a, s.inputs()); });
    CHECK(msg.find("a batch of one pair") != std::string::npos);
    CHECK_THROWS_AS(draw(a, s.inputs()), value_error);
    sims with_other_rank(1, 2, 2, 8);  // one local pair, one from another rank: fine
    CHECK(draw(a, with_other_rank.inputs(1)).first == std::vector<index_t>{0});
  }
  SUBCASE("a row whose every column is the same image") {
    sims s(3, 3, 3, 9);
    s.ids = {5, 5, 5};
    const auto msg = error_of([&] { draw(a, s.inputs(0, 0, true)); });
    CHECK(msg.find("row 0 has no negative") != std::string::npos);
    CHECK_THROWS_AS(draw(a, s.inputs(0, 0, true)), value_error);
  }
  SUBCASE("shapes") {
    sims s(3, 4, 5, 10);
    std::vector<index_t> two(2), three(3);
    CHECK_THROWS_AS(a.sample(s.inputs(), tensor_view<index_t, 1>(two.data(), {2}), tensor_view<index_t, 1>(three.data(), {3})),
                    shape_error);
    s.ids = {0, 1, 2, 3};
    CHECK_THROWS_AS(draw(a, s.inputs(0, 0, true)), shape_error);  // ids need Bi == Bt
    auto in = s.inputs(2);                                        // 2 + 3 rows > 4 image columns
    CHECK_THROWS_AS(draw(a, in), value_error);
    negative_sampling_inputs<double> bad = s.inputs();
    bad.sim_t2i = {s.t2i.data(), {2, 4}};  // 2 rows against 3
    CHECK_THROWS_AS(draw(a, bad), shape_error);
  }
}
