// opt_decoder: the OPT decoder (models/opt/decoder.hpp) against finite differences in double and against
// itself through the KV cache; its loader and its errors. The PyTorch fixtures of the whole stage 2 are
// in test_stage2_golden.cpp.
//
//   [fd]     central differences in double on the reference backend: d(embeds) through the frozen
//            decoder, and parameter gradients of a trainable one; pre-LN and post-LN with
//            project_in/out; a mask with left and right padding. Tolerance as harness/gradcheck.hpp
//            argues (|a - n| <= 1e-7 + 1e-5 |n|: truncation and round-off are ~1e-11 in double).
//   [cache]  the logits of a whole pass equal those of a prefill followed by one position at a time
//            (and after select() reorders and duplicates sequences) up to double round-off (1e-12
//            relative to the largest logit: the same sums in another association order).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/models/opt/session.hpp"

using namespace blip2;

namespace {

opt_config tiny_config(bool pre_ln, bool projections) {
  opt_config c;
  c.vocab_size = 23;
  c.hidden_size = 8;
  c.word_embed_proj_dim = projections ? 6 : 8;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.ffn_dim = 12;
  c.max_position_embeddings = 16;
  c.do_layer_norm_before = pre_ln;
  return c;
}

void randomize(std::span<double> p, std::uint64_t seed, double scale) {
  for (std::size_t k = 0; k < p.size(); ++k) p[k] = scale * (2 * uniform_double(seed, k) - 1);
}

// sum(G * logits of every row) of one whole pass over embeds (L B, Dw) under mask (B, L)
struct decoder_case {
  opt_model<double>& m;
  index_t B, L;
  std::vector<double> embeds, G;
  std::vector<index_t> mask;
  reference_backend be;
  layer_kv_caches<double> cache;
  opt_pass_state<double> st;
  std::vector<double> logits;

  double objective() {
    const auto& c = m.config();
    cache.reserve(c.num_hidden_layers, B, L, c.hidden_size, false);
    opt_forward(be, m, st, cache, tensor_view<const double, 2>(embeds.data(), {L * B, c.word_embed_proj_dim}),
                tensor_view<const index_t, 2>(mask.data(), {B, L}));
    logits.assign(static_cast<std::size_t>(L * B * c.vocab_size), 0);
    opt_logits(be, m, tensor_view<double, 2>(logits.data(), {L * B, c.vocab_size}), detail::as_const(st.out));
    double s = 0;
    for (std::size_t k = 0; k < logits.size(); ++k) s += G[k] * logits[k];
    return s;
  }
  // d(embeds) of the objective (parameter gradients added into m.g when trainable)
  std::vector<double> gradient() {
    const auto& c = m.config();
    objective();
    std::vector<double> dout(static_cast<std::size_t>(L * B * c.word_embed_proj_dim)), de(dout.size());
    opt_logits_backward(be, m, tensor_view<double, 2>(dout.data(), {L * B, c.word_embed_proj_dim}),
                        tensor_view<const double, 2>(G.data(), {L * B, c.vocab_size}), detail::as_const(st.out));
    opt_backward(be, m, st, cache, tensor_view<const double, 2>(dout.data(), {L * B, c.word_embed_proj_dim}),
                 tensor_view<double, 2>(de.data(), {L * B, c.word_embed_proj_dim}));
    return de;
  }
};

decoder_case make_case(opt_model<double>& m, std::uint64_t seed) {
  const index_t B = 2, L = 5;
  decoder_case dc{m, B, L, {}, {}, {}, {}, {}, {}, {}};
  const auto& c = m.config();
  dc.embeds.resize(static_cast<std::size_t>(L * B * c.word_embed_proj_dim));
  randomize(dc.embeds, seed + 1, 1.0);
  dc.G.resize(static_cast<std::size_t>(L * B * c.vocab_size));
  randomize(dc.G, seed + 2, 1.0);
  // sequence 0: a left pad; sequence 1: a right pad
  dc.mask = {0, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 0};
  return dc;
}

double check_fd(decoder_case& dc, std::span<double> x, std::span<const double> analytic, std::size_t max_checked) {
  const double h = 1e-5;
  double worst = 0;
  const std::size_t step = std::max<std::size_t>(1, x.size() / max_checked);
  for (std::size_t k = 0; k < x.size(); k += step) {
    const double keep = x[k];
    x[k] = keep + h;
    const double up = dc.objective();
    x[k] = keep - h;
    const double down = dc.objective();
    x[k] = keep;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(analytic[k] - numeric) / (1e-7 + 1e-5 * std::abs(numeric)));
  }
  return worst;
}

}  // namespace

TEST_CASE("[fd] OPT decoder: d(embeds) and parameter gradients, pre-LN and post-LN with projections") {
  for (const bool pre : {true, false}) {
    CAPTURE(pre);
    const opt_config c = tiny_config(pre, !pre);
    opt_model<double> m(c, opt_storage::with_gradients);
    randomize(m.parameters(), pre ? 11 : 12, 0.5);
    // LayerNorm weights near 1 as in a trained model
    for (auto& l : m.w.layers)
      for (auto* n : {&l.self.norm, &l.ffn.norm})
        for (index_t k = 0; k < c.hidden_size; ++k) n->weight(k) += 1.0;
    auto dc = make_case(m, 40);
    m.zero_grad(dc.be);
    const auto de = dc.gradient();
    const std::vector<double> g(m.gradients().begin(), m.gradients().end());
    CHECK(check_fd(dc, dc.embeds, de, 40) <= 1.0);
    CHECK(check_fd(dc, m.parameters(), g, 120) <= 1.0);

    // frozen: the same d(embeds), and no gradient arena at all
    opt_model<double> frozen(c);
    std::copy(m.parameters().begin(), m.parameters().end(), frozen.parameters().begin());
    CHECK(frozen.gradients_or_null() == nullptr);
    auto dc2 = make_case(frozen, 40);
    const auto de2 = dc2.gradient();
    REQUIRE(de2.size() == de.size());
    double diff = 0;
    for (std::size_t k = 0; k < de.size(); ++k) diff = std::max(diff, std::abs(de[k] - de2[k]));
    CHECK(diff <= 1e-12);
  }
}

TEST_CASE("[cache] OPT decoder: prefill + one position at a time + select == one whole pass") {
  const opt_config c = tiny_config(true, false);
  opt_model<double> m(c);
  randomize(m.parameters(), 5, 0.5);
  const index_t B = 2, L = 6, P = 3, V = c.vocab_size, Dw = c.word_embed_proj_dim;
  // token ids for positions P .. L-1; the prompt is embeds (soft-prompt-like rows)
  const std::vector<std::int32_t> tok0 = {4, 9, 17}, tok1 = {21, 0, 3};
  std::vector<double> prompt(static_cast<std::size_t>(P * B * Dw));
  randomize(prompt, 77, 1.0);
  const std::vector<index_t> prompt_mask = {0, 1, 1, /**/ 1, 1, 1};  // sequence 0 left-padded
  // whole pass: rows p B + b, the tokens embedded by hand
  std::vector<double> all(static_cast<std::size_t>(L * B * Dw));
  std::copy(prompt.begin(), prompt.end(), all.begin());
  for (index_t p = P; p < L; ++p)
    for (index_t b = 0; b < B; ++b) {
      const index_t id = (b == 0 ? tok0 : tok1)[static_cast<std::size_t>(p - P)];
      for (index_t d = 0; d < Dw; ++d) all[static_cast<std::size_t>((p * B + b) * Dw + d)] = m.w.embed_tokens(id, d);
    }
  std::vector<index_t> mask_all = {0, 1, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 1, 1};
  reference_backend be;
  layer_kv_caches<double> cache;
  cache.reserve(c.num_hidden_layers, B, L, c.hidden_size, false);
  opt_pass_state<double> st;
  opt_forward(be, m, st, cache, tensor_view<const double, 2>(all.data(), {L * B, Dw}),
              tensor_view<const index_t, 2>(mask_all.data(), {B, L}));
  std::vector<double> want(static_cast<std::size_t>(L * B * V));
  opt_logits(be, m, tensor_view<double, 2>(want.data(), {L * B, V}), detail::as_const(st.out));
  double scale = 0;
  for (double x : want) scale = std::max(scale, std::abs(x));
  auto expect_rows = [&](const opt_session<reference_backend, double>& s, index_t p, std::vector<index_t> rows) {
    double err = 0;
    for (index_t i = 0; i < static_cast<index_t>(rows.size()); ++i)
      for (index_t v = 0; v < V; ++v)
        err = std::max(err, std::abs(static_cast<double>(s.logits()(i, v)) -
                                     want[static_cast<std::size_t>((p * B + rows[static_cast<std::size_t>(i)]) * V + v)]));
    return err / scale;
  };
  opt_session<reference_backend, double> s(be, m);
  s.start(tensor_view<const double, 2>(prompt.data(), {P * B, Dw}), tensor_view<const index_t, 2>(prompt_mask.data(), {B, P}),
          L - P);
  // the session's logits are float: compare at float precision (2^-24 relative)
  CHECK(expect_rows(s, P - 1, {0, 1}) <= 1e-6);
  s.append(std::vector<std::int32_t>{tok0[0], tok1[0]});
  CHECK(expect_rows(s, P, {0, 1}) <= 1e-6);
  // swap and duplicate: rows (1, 0, 1), then feed each row its own sequence's next token
  s.select(std::vector<index_t>{1, 0, 1});
  CHECK(expect_rows(s, P, {1, 0, 1}) <= 1e-6);
  s.append(std::vector<std::int32_t>{tok1[1], tok0[1], tok1[1]});
  CHECK(expect_rows(s, P + 1, {1, 0, 1}) <= 1e-6);
  s.select(std::vector<index_t>{1});
  s.append(std::vector<std::int32_t>{tok0[2]});
  CHECK(expect_rows(s, P + 2, {0}) <= 1e-6);
  // the cache is full: one more position is an error naming the capacity
  CHECK_THROWS_WITH_AS(s.append(std::vector<std::int32_t>{1}), doctest::Contains("room for 6 positions"), value_error);
}

TEST_CASE("OPT decoder: errors name what is wrong") {
  const opt_config c = tiny_config(true, false);
  opt_model<double> m(c);
  reference_backend be;
  opt_session<reference_backend, double> s(be, m);
  std::vector<double> e(static_cast<std::size_t>(20 * c.word_embed_proj_dim), 0.0);
  std::vector<index_t> mask(20, 1);
  // 20 positions do not fit 16
  CHECK_THROWS_WITH_AS(s.start(tensor_view<const double, 2>(e.data(), {20, c.word_embed_proj_dim}),
                               tensor_view<const index_t, 2>(mask.data(), {1, 20}), 0),
                       doctest::Contains("max_position_embeddings = 16"), value_error);
  std::vector<index_t> bad = {1, 2, 1};
  CHECK_THROWS_WITH_AS(s.start(tensor_view<const double, 2>(e.data(), {3, c.word_embed_proj_dim}),
                               tensor_view<const index_t, 2>(bad.data(), {1, 3}), 0),
                       doctest::Contains("is not 0 or 1"), value_error);
  // a prompt that ends with padding would generate from a pad row
  std::vector<index_t> right_padded = {1, 1, 0};
  CHECK_THROWS_WITH_AS(s.start(tensor_view<const double, 2>(e.data(), {3, c.word_embed_proj_dim}),
                               tensor_view<const index_t, 2>(right_padded.data(), {1, 3}), 0),
                       doctest::Contains("pad prompts on the left"), value_error);
  // bfloat16 copies: only of a frozen decoder, only once
  opt_model<double> trainable(c, opt_storage::with_gradients);
  CHECK_THROWS_WITH_AS(trainable.store_bfloat16(), doctest::Contains("trainable decoder"), value_error);
  m.store_bfloat16(false);
  CHECK_THROWS_WITH_AS(m.store_bfloat16(), doctest::Contains("exist already"), value_error);
  opt_config odd = c;
  odd.num_attention_heads = 3;
  CHECK_THROWS_WITH_AS(opt_model<double>{odd}, doctest::Contains("not divisible by num_attention_heads"), format_error);
}
