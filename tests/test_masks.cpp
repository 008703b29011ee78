// test_masks: the exact allowed/masked pattern of every BLIP-2 mask policy, written out literally for
// Q = 2 queries and T = 3 text tokens, with and without key padding, and the additive values; and the
// generic causal{offset} (core/mask_policy.hpp) with offsets 0 and 2.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/models/qformer/masks.hpp"

using namespace blip2;

namespace {

using pattern = std::vector<std::vector<int>>;

// 1 where the additive mask is exactly 0 (attend), 0 where it is exactly -10000 (masked); anything
// else (-20000 for "masked twice", -inf, NaN) fails.
pattern allowed_pattern(const host_tensor<float, 3>& m, index_t b) {
  pattern p(static_cast<std::size_t>(m.extent(1)), std::vector<int>(static_cast<std::size_t>(m.extent(2))));
  for (index_t t = 0; t < m.extent(1); ++t)
    for (index_t s = 0; s < m.extent(2); ++s) {
      const float x = m(b, t, s);
      CHECK_MESSAGE((x == 0.0f || x == -10000.0f), "mask(" << b << "," << t << "," << s << ") = " << x);
      p[t][s] = x == 0.0f ? 1 : 0;
    }
  return p;
}

// Key padding for B = 2 over 5 keys [q0 q1 w0 w1 w2]: batch 0 keeps all, batch 1 pads the last word.
host_tensor<float, 2> padding_5() {
  host_tensor<float, 2> pad({2, 5}, 1.0f);
  pad(1, 4) = 0.0f;
  return pad;
}

struct every_other {  // a user policy: proves the concept is all a kernel needs
  bool allowed(index_t row, index_t col) const { return (row + col) % 2 == 0; }
};

}  // namespace

TEST_CASE("mask policies satisfy the concept") {
  static_assert(mask_policy<bidirectional>);
  static_assert(mask_policy<unimodal_mask>);
  static_assert(mask_policy<multimodal_causal_mask>);
  static_assert(mask_policy<causal>);
  static_assert(mask_policy<every_other>);
  static_assert(!mask_policy<int>);
  CHECK(mask_name(multimodal_causal_mask{2}) == "multimodal_causal");
  CHECK(mask_name(causal{3}) == "causal");
  CHECK(mask_name(every_other{}) == "mask");
}

TEST_CASE("bidirectional: every key, for self- and cross-attention") {
  const auto m = materialize(bidirectional{}, no_padding, 1, 5, 5);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 1, 1, 1},
                                         {1, 1, 1, 1, 1},
                                         {1, 1, 1, 1, 1},
                                         {1, 1, 1, 1, 1},
                                         {1, 1, 1, 1, 1}});
  // cross-attention: Q = 2 queries over 3 image tokens
  const auto x = materialize(bidirectional{}, no_padding, 1, 2, 3);
  CHECK(allowed_pattern(x, 0) == pattern{{1, 1, 1}, {1, 1, 1}});
}

TEST_CASE("unimodal (Q=2, T=3): queries see queries, text sees text") {
  const auto m = materialize(unimodal_mask{2}, no_padding, 1, 5, 5);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 0, 0, 0},
                                         {1, 1, 0, 0, 0},
                                         {0, 0, 1, 1, 1},
                                         {0, 0, 1, 1, 1},
                                         {0, 0, 1, 1, 1}});
}

TEST_CASE("multimodal causal (Q=2, T=3): queries see queries, text sees all queries and text <= itself") {
  const auto m = materialize(multimodal_causal_mask{2}, no_padding, 1, 5, 5);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 0, 0, 0},
                                         {1, 1, 0, 0, 0},
                                         {1, 1, 1, 0, 0},
                                         {1, 1, 1, 1, 0},
                                         {1, 1, 1, 1, 1}});
}

TEST_CASE("cached query K/V (Q=2, T=3): text rows over [2 cached query keys ; 3 text keys]") {
  const auto m = materialize(causal{2}, no_padding, 1, 3, 5);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 1, 0, 0},
                                         {1, 1, 1, 1, 0},
                                         {1, 1, 1, 1, 1}});
  // the text rows of the multimodal causal mask, as ITG's text pass must see them
  const auto full = materialize(multimodal_causal_mask{2}, no_padding, 1, 5, 5);
  for (index_t i = 0; i < 3; ++i)
    for (index_t s = 0; s < 5; ++s) CHECK(m(0, i, s) == full(0, 2 + i, s));
}

TEST_CASE("causal{0}: plain causal self-attention, row t sees keys 0..t") {
  const auto m = materialize(causal{}, no_padding, 1, 4, 4);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 0, 0, 0},
                                         {1, 1, 0, 0},
                                         {1, 1, 1, 0},
                                         {1, 1, 1, 1}});
  // T = 1 over its own key only
  CHECK(allowed_pattern(materialize(causal{}, no_padding, 1, 1, 1), 0) == pattern{{1}});
}

TEST_CASE("causal{2}: rows over [2 cached keys ; their own], row t sees keys 0..t+2") {
  const auto m = materialize(causal{2}, no_padding, 1, 2, 4);
  CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 1, 0},
                                         {1, 1, 1, 1}});
  // a one-token decoder step over a cache of 2 positions sees every key
  CHECK(allowed_pattern(materialize(causal{2}, no_padding, 1, 1, 3), 0) == pattern{{1, 1, 1}});
}

TEST_CASE("causal::check: S must be offset + T, offset >= 0, with the numbers in the message") {
  auto message = [](const causal& c, index_t rows, index_t cols) -> std::string {
    try {
      c.check(rows, cols);
    } catch (const shape_error& e) {
      return e.what();
    }
    return "";
  };
  CHECK_NOTHROW(causal{}.check(5, 5));
  CHECK_NOTHROW(causal{3}.check(2, 5));
  const std::string square = message(causal{}, 3, 4);  // no offset: S = T
  CHECK(square.find("S = offset + T") != std::string::npos);
  CHECK(square.find("offset = 0, T = 3, S = 4") != std::string::npos);
  CHECK(message(causal{2}, 3, 4).find("offset = 2, T = 3, S = 4") != std::string::npos);
  CHECK(message(causal{-1}, 3, 2).find("offset = -1") != std::string::npos);
  CHECK_THROWS_AS(materialize(causal{1}, no_padding, 1, 3, 3), shape_error);
}

TEST_CASE("key padding masks keys, once, on top of every policy") {
  const auto pad = padding_5();
  SUBCASE("bidirectional (ITM, and ITC's text pass)") {
    const auto m = materialize(bidirectional{}, pad.view(), 2, 5, 5);
    CHECK(allowed_pattern(m, 0) == pattern(5, {1, 1, 1, 1, 1}));
    CHECK(allowed_pattern(m, 1) == pattern{{1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0}});
  }
  SUBCASE("unimodal") {
    const auto m = materialize(unimodal_mask{2}, pad.view(), 2, 5, 5);
    CHECK(allowed_pattern(m, 1) == pattern{{1, 1, 0, 0, 0},
                                           {1, 1, 0, 0, 0},
                                           {0, 0, 1, 1, 0},
                                           {0, 0, 1, 1, 0},
                                           {0, 0, 1, 1, 0}});
  }
  SUBCASE("multimodal causal") {
    const auto m = materialize(multimodal_causal_mask{2}, pad.view(), 2, 5, 5);
    CHECK(allowed_pattern(m, 0) == pattern{{1, 1, 0, 0, 0},
                                           {1, 1, 0, 0, 0},
                                           {1, 1, 1, 0, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 1}});
    CHECK(allowed_pattern(m, 1) == pattern{{1, 1, 0, 0, 0},
                                           {1, 1, 0, 0, 0},
                                           {1, 1, 1, 0, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0}});
    // (row 3, key 4) is both disallowed and padded: -10000 once, never -20000
    CHECK(m(1, 3, 4) == -10000.0f);
  }
  SUBCASE("cached query K/V") {
    const auto m = materialize(causal{2}, pad.view(), 2, 3, 5);
    CHECK(allowed_pattern(m, 1) == pattern{{1, 1, 1, 0, 0},
                                           {1, 1, 1, 1, 0},
                                           {1, 1, 1, 1, 0}});
  }
  SUBCASE("a fully padded key row stays finite (-10000 everywhere, not -inf)") {
    host_tensor<float, 2> none({1, 3}, 0.0f);
    const auto m = materialize(bidirectional{}, none.view(), 1, 2, 3);
    for (index_t t = 0; t < 2; ++t)
      for (index_t s = 0; s < 3; ++s) CHECK(m(0, t, s) == -10000.0f);
  }
}

TEST_CASE("additive values equal Hugging Face's extended mask (1 - causal * padding) * -10000") {
  const auto pad = padding_5();
  const auto m = materialize(multimodal_causal_mask{2}, pad.view(), 2, 5, 5);
  const multimodal_causal_mask policy{2};
  for (index_t b = 0; b < 2; ++b)
    for (index_t t = 0; t < 5; ++t)
      for (index_t s = 0; s < 5; ++s) {
        const float causal = policy.allowed(t, s) ? 1.0f : 0.0f;
        CHECK(m(b, t, s) == (1.0f - causal * pad(b, s)) * -10000.0f);
      }
  // a user policy materialises like the built-in ones
  const auto e = materialize(every_other{}, no_padding, 1, 2, 3);
  CHECK(allowed_pattern(e, 0) == pattern{{1, 0, 1}, {0, 1, 0}});
}

TEST_CASE("policies reject shapes they do not fit") {
  CHECK_THROWS_AS(materialize(unimodal_mask{2}, no_padding, 1, 5, 7), shape_error);
  CHECK_THROWS_AS(materialize(multimodal_causal_mask{6}, no_padding, 1, 5, 5), shape_error);
  CHECK_THROWS_AS(materialize(causal{2}, no_padding, 1, 3, 6), shape_error);
  host_tensor<float, 2> pad({2, 4}, 1.0f);
  CHECK_THROWS_AS(materialize(bidirectional{}, pad.view(), 2, 5, 5), shape_error);
  CHECK_NOTHROW(materialize(bidirectional{}, no_padding, 1, 4, 9));
}
