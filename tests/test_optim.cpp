// test_optim: AdamW (optim/adamw.hpp), the learning-rate schedule (optim/schedule.hpp), gradient
// clipping and accumulation (optim/clip_grad.hpp).
//
// Oracles: a two-step example worked by hand; an independent double-precision loop written from the
// formulas (b1 m + (1 - b1) g, not torch's lerp form); numbers printed once by torch 1.13
// (torch.optim.AdamW, foreach=False; the script is in the comment of that test); the schedule's closed
// forms; LAVIS's formulas for its schedule.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "blip2/core/rng.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"

using blip2::index_t;

namespace {

// Plain double AdamW, written from the formulas independently of adamw.hpp.
struct reference_adamw {
  double b1, b2, eps, wd;
  std::vector<double> m, v;
  std::vector<bool> decay;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g, double lr) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decay[i]) p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

blip2::qformer_model_config tiny_config() {
  blip2::qformer_model_config c;
  c.qformer.vocab_size = 11;
  c.qformer.hidden_size = 8;
  c.qformer.num_hidden_layers = 2;
  c.qformer.num_attention_heads = 2;
  c.qformer.intermediate_size = 12;
  c.qformer.cross_attention_frequency = 2;
  c.qformer.encoder_hidden_size = 6;
  c.qformer.max_position_embeddings = 7;
  c.num_query_tokens = 3;
  c.image_text_hidden_size = 4;
  c.with_text = true;
  c.with_stage1_heads = true;
  return c;
}

double pseudo(std::uint64_t seed, std::uint64_t i) { return 2.0 * blip2::uniform_double(seed, i) - 1.0; }

}  // namespace

TEST_CASE("adamw: a two-step example worked by hand") {
  // p = 1, g = 0.5 then -0.25, lr 0.1, wd 0.05, betas (0.9, 0.98), eps 1e-8.
  // step 1: p = 1 * (1 - 0.1 * 0.05) = 0.995; m = 0.05; v = 0.02 * 0.25 = 0.005;
  //         m_hat = 0.05 / 0.1 = 0.5; v_hat = 0.005 / 0.02 = 0.25; sqrt = 0.5;
  //         p = 0.995 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.895 + 2e-9 (to 1e-17)            torch: 0.89500000199999996
  // step 2: p = 0.895000002 * 0.995 = 0.89052500199; m = 0.045 - 0.025 = 0.02;
  //         v = 0.98 * 0.005 + 0.02 * 0.0625 = 0.00615; bc1 = 0.19; bc2 = 1 - 0.9604 = 0.0396;
  //         m_hat = 0.105263157894737, v_hat = 0.155303030303030, sqrt = 0.394085054655756;
  //         p = 0.89052500199 - 0.1 * m_hat / (sqrt + 1e-8) = 0.89052500199 - 0.0267107706775661
  //           = 0.863814231312434                                                        torch: 0.86381423131243396
  blip2::adamw<double> opt(1, {.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.05});
  std::vector<double> p{1.0}, g{0.5};
  opt.step(p, g, 0.1);
  CHECK(p[0] == doctest::Approx(0.895000002).epsilon(1e-15));
  CHECK(opt.exp_avg()[0] == doctest::Approx(0.05).epsilon(1e-15));
  CHECK(opt.exp_avg_sq()[0] == doctest::Approx(0.005).epsilon(1e-15));
  g[0] = -0.25;
  opt.step(p, g, 0.1);
  CHECK(opt.step_count() == 2);
  CHECK(opt.exp_avg()[0] == doctest::Approx(0.02).epsilon(1e-15));
  CHECK(opt.exp_avg_sq()[0] == doctest::Approx(0.00615).epsilon(1e-15));
  CHECK(p[0] == doctest::Approx(0.863814231312434).epsilon(1e-14));
}

TEST_CASE("adamw: against PyTorch (numbers printed once by torch.optim.AdamW)") {
  // import torch
  // for dt in (torch.float32, torch.float64):
  //     a = torch.tensor([0.5, -1.25, 2.0], dtype=dt, requires_grad=True)   # decayed
  //     b = torch.tensor([0.0, 3.5], dtype=dt, requires_grad=True)          # not decayed
  //     opt = torch.optim.AdamW([{"params": [a], "weight_decay": 0.05}, {"params": [b], "weight_decay": 0.0}],
  //                             lr=1e-3, betas=(0.9, 0.98), eps=1e-8, foreach=False)
  //     grads = [[0.1, -0.2, 0.3, -0.4, 0.5], [-0.05, 0.25, 1.5, 0.0, -2.0], [0.3, 0.3, -0.7, 1e-4, 0.01]]
  //     for g, lr in zip(grads, [1e-3, 5e-4, 2.5e-4]):
  //         for grp in opt.param_groups: grp["lr"] = lr
  //         a.grad = torch.tensor(g[:3], dtype=dt); b.grad = torch.tensor(g[3:], dtype=dt); opt.step()
  // float32: 0.49865636229515076 -1.2491037845611572 1.9983115196228027 0.0014673569239675999 3.4993860721588135
  // float64: 0.49865635765577987 -1.2491037965182135 1.9983117169328222 0.0014673568254701195 3.4993859902420326
  const double torch_f32[] = {0.49865636229515076, -1.2491037845611572, 1.9983115196228027, 0.0014673569239675999,
                              3.4993860721588135};
  const double torch_f64[] = {0.49865635765577987, -1.2491037965182135, 1.9983117169328222, 0.0014673568254701195,
                              3.4993859902420326};
  const std::vector<std::vector<double>> grads{
      {0.1, -0.2, 0.3, -0.4, 0.5}, {-0.05, 0.25, 1.5, 0.0, -2.0}, {0.3, 0.3, -0.7, 1e-4, 0.01}};
  const double lrs[] = {1e-3, 5e-4, 2.5e-4};
  const std::vector<blip2::param_segment> segs{{"a", 0, 3, true}, {"b", 3, 2, false}};
  const blip2::adamw_options o{.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.05};

  reference_adamw ref{0.9, 0.98, 1e-8, 0.05, std::vector<double>(5), std::vector<double>(5),
                      {true, true, true, false, false}};
  std::vector<double> pr{0.5, -1.25, 2.0, 0.0, 3.5};
  blip2::adamw<double> od(5, o, segs);
  blip2::adamw<float> of(5, o, segs);
  std::vector<double> pd = pr;
  std::vector<float> pf(pr.begin(), pr.end());
  for (int s = 0; s < 3; ++s) {
    std::vector<float> gf(grads[s].begin(), grads[s].end());
    ref.step(pr, grads[s], lrs[s]);
    od.step(pd, grads[s], lrs[s]);
    of.step(pf, gf, lrs[s]);
  }
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(pd[i] == doctest::Approx(pr[i]).epsilon(1e-14));             // the independent double loop
    CHECK(pd[i] == doctest::Approx(torch_f64[i]).epsilon(1e-14));      // torch, float64
    CHECK(pf[i] == doctest::Approx(torch_f32[i]).epsilon(2e-7));       // torch, float32 (computes in float)
    CHECK(static_cast<double>(pf[i]) == doctest::Approx(pr[i]).epsilon(2e-7));
  }
}

TEST_CASE("adamw: many elements and segments, float and double, against the independent loop") {
  const index_t n = 10007;
  std::vector<blip2::param_segment> segs;
  std::vector<bool> mask;
  for (index_t off = 0, k = 0; off < n; ++k) {
    const index_t len = std::min<index_t>(n - off, 1 + (k * 37) % 900);
    std::string name = "segment_";  // (built by +=: g++ 12 -O3 warns falsely on "literal" + std::string)
    name += std::to_string(k);
    segs.push_back({name, off, len, k % 3 != 0});
    mask.insert(mask.end(), static_cast<std::size_t>(len), k % 3 != 0);
    off += len;
  }
  const blip2::adamw_options o{.beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.05};
  reference_adamw ref{0.9, 0.98, 1e-8, 0.05, std::vector<double>(n), std::vector<double>(n), mask};
  std::vector<double> pr(n), pd(n);
  std::vector<float> pf(n);
  for (index_t i = 0; i < n; ++i) pr[i] = pd[i] = pf[i] = static_cast<float>(pseudo(1, i));
  blip2::adamw<double> od(n, o, segs);
  blip2::adamw<float> of(n, o, segs);
  for (int s = 0; s < 6; ++s) {
    std::vector<double> g(n);
    std::vector<float> gf(n);
    for (index_t i = 0; i < n; ++i) g[i] = gf[i] = static_cast<float>(pseudo(100 + s, i) * (1 + i % 5));
    const double lr = 1e-2 / (1 + s);
    ref.step(pr, g, lr);
    od.step(pd, g, lr);
    of.step(pf, gf, lr);
  }
  double worst_d = 0, worst_f = 0;
  for (index_t i = 0; i < n; ++i) {
    worst_d = std::max(worst_d, std::abs(pd[i] - pr[i]));
    worst_f = std::max(worst_f, std::abs(static_cast<double>(pf[i]) - pr[i]));
  }
  CHECK(worst_d < 1e-14);
  CHECK(worst_f < 1e-6);
}

TEST_CASE("adamw: zero lr leaves the parameters; zero weight decay ignores the mask; undecayed segments skip decay") {
  std::vector<double> p{1.0, -2.0}, g{0.0, 0.0};
  blip2::adamw<double> opt(2, {.weight_decay = 0.5});
  opt.step(p, g, 0.0);
  CHECK(p == std::vector<double>{1.0, -2.0});
  // g = 0: only the decay moves a decayed parameter
  opt.step(p, g, 0.1);
  CHECK(p[0] == doctest::Approx(0.95).epsilon(1e-15));
  blip2::adamw<double> nodecay(2, {.weight_decay = 0.5}, {{"x", 0, 2, false}});
  std::vector<double> q{1.0, -2.0};
  nodecay.step(q, g, 0.1);
  CHECK(q == std::vector<double>{1.0, -2.0});
}

#if defined(_OPENMP)
TEST_CASE("adamw and grad_norm: the same bits with 1 and several threads") {
  const index_t n = 50001;
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    std::vector<float> p(n), g(n);
    for (index_t i = 0; i < n; ++i) p[i] = static_cast<float>(pseudo(3, i));
    blip2::adamw<float> opt(n, {}, {{"a", 0, 20000, true}, {"b", 20000, n - 20000, false}});
    double norm = 0;
    for (int s = 0; s < 3; ++s) {
      for (index_t i = 0; i < n; ++i) g[i] = static_cast<float>(pseudo(7 + s, i));
      norm += blip2::clip_grad_norm(std::span<float>(g), 10.0);
      opt.step(p, g, 1e-3);
    }
    return std::pair{p, norm};
  };
  const int saved = omp_get_max_threads();
  const auto [p1, n1] = run(1);
  const auto [p4, n4] = run(4);
  omp_set_num_threads(saved);
  CHECK(p1 == p4);
  CHECK(std::bit_cast<std::uint64_t>(n1) == std::bit_cast<std::uint64_t>(n4));
}
#endif

TEST_CASE("adamw: argument errors") {
  CHECK_THROWS_AS(blip2::adamw<float>(4, {.beta1 = 1.0}), blip2::value_error);
  CHECK_THROWS_AS(blip2::adamw<float>(4, {.beta2 = -0.1}), blip2::value_error);
  CHECK_THROWS_AS(blip2::adamw<float>(4, {.eps = -1}), blip2::value_error);
  CHECK_THROWS_AS(blip2::adamw<float>(4, {.weight_decay = -1}), blip2::value_error);
  CHECK_THROWS_WITH_AS(blip2::adamw<float>(4, {}, {{"a", 0, 2, true}, {"b", 3, 1, true}}),
                       doctest::Contains("segment 'b' at offset 3"), blip2::value_error);
  CHECK_THROWS_WITH_AS(blip2::adamw<float>(4, {}, {{"a", 0, 2, true}}), doctest::Contains("cover 2 elements but there are 4"),
                       blip2::value_error);
  blip2::adamw<float> opt(4);
  std::vector<float> p(4), g(3);
  CHECK_THROWS_AS(opt.step(p, g, 1e-3), blip2::shape_error);
  g.resize(4);
  CHECK_THROWS_AS(opt.step(p, g, -1.0), blip2::value_error);
  CHECK_THROWS_AS(opt.step(p, g, std::numeric_limits<double>::quiet_NaN()), blip2::value_error);
  CHECK(opt.step_count() == 0);
}

TEST_CASE("decay_groups: which Q-Former parameters get weight decay, by name") {
  const auto cfg = tiny_config();
  const auto segs = blip2::decay_groups(cfg);
  // The segments tile the arena in for_each_parameter order.
  blip2::qformer_model<float> m(cfg);
  index_t off = 0;
  std::size_t k = 0;
  blip2::for_each_parameter(cfg, m.w, [&](const std::string& name, auto& v) {
    REQUIRE(k < segs.size());
    CHECK(segs[k].name == name);
    CHECK(segs[k].offset == off);
    CHECK(segs[k].size == v.size());
    CHECK(v.data() == m.parameters().data() + off);
    off += v.size();
    ++k;
  });
  CHECK(k == segs.size());
  CHECK(off == static_cast<index_t>(m.parameters().size()));

  std::vector<std::string> decayed, not_decayed;
  for (const auto& s : segs) (s.decay ? decayed : not_decayed).push_back(s.name);
  auto layer = [](int l, bool cross) {
    std::vector<std::string> d;
    const std::string p = "qformer.encoder.layer." + std::to_string(l);
    for (const char* a : cross ? std::vector<const char*>{".attention", ".crossattention"} : std::vector<const char*>{".attention"})
      for (const char* x : {".attention.query", ".attention.key", ".attention.value", ".output.dense"})
        d.push_back(p + a + x + ".weight");
    for (const char* x : {".intermediate.dense", ".output.dense", ".intermediate_query.dense", ".output_query.dense"})
      d.push_back(p + x + ".weight");
    return d;
  };
  std::vector<std::string> want_decayed{"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"};
  for (int l = 0; l < 2; ++l)
    for (auto& s : layer(l, l % 2 == 0)) want_decayed.push_back(s);
  for (const char* s : {"vision_projection.weight", "text_projection.weight", "itm_head.weight",
                        "cls.predictions.transform.dense.weight"})
    want_decayed.push_back(s);
  std::sort(decayed.begin(), decayed.end());
  std::sort(want_decayed.begin(), want_decayed.end());
  CHECK(decayed == want_decayed);

  // Everything else: every bias, every LayerNorm, query_tokens, temp.
  CHECK(not_decayed.size() == segs.size() - want_decayed.size());
  for (const auto& n : not_decayed) {
    CAPTURE(n);
    const bool ok = n.ends_with(".bias") || n.find("LayerNorm") != std::string::npos ||
                    n.find("layernorm") != std::string::npos || n == "query_tokens" || n == "temp" ||
                    n == "cls.predictions.bias";
    CHECK(ok);
  }
  for (const char* n : {"query_tokens", "temp", "cls.predictions.bias", "qformer.layernorm.weight", "qformer.layernorm.bias",
                        "qformer.encoder.layer.0.crossattention.output.LayerNorm.weight",
                        "qformer.encoder.layer.1.output_query.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight",
                        "itm_head.bias", "qformer.encoder.layer.1.attention.attention.key.bias"})
    CHECK(std::find(not_decayed.begin(), not_decayed.end(), n) != not_decayed.end());

  // LAVIS's rule (ndim < 2 or "bias"/"ln"/"bn" in the name) differs only in query_tokens.
  const auto lavis = blip2::decay_groups(m, blip2::no_decay_rule::lavis);
  REQUIRE(lavis.size() == segs.size());
  for (std::size_t i = 0; i < segs.size(); ++i) {
    CAPTURE(segs[i].name);
    CHECK(lavis[i].decay == (segs[i].decay || segs[i].name == "query_tokens"));
  }
  // make_adamw uses the groups
  auto opt = blip2::make_adamw(m);
  CHECK(opt.size() == off);
  CHECK(opt.segments().size() == segs.size());
  CHECK(opt.options().beta2 == 0.98);
  CHECK(opt.options().weight_decay == 0.05);
}

TEST_CASE("warmup_cosine_schedule: warm-up start and end, mid-cosine, end, after") {
  const blip2::warmup_cosine_schedule s{.base_lr = 1e-4, .min_lr = 1e-5, .warmup_start_lr = 1e-6, .warmup_steps = 100,
                                        .total_steps = 1100};
  CHECK(s(0) == 1e-6);
  CHECK(s(50) == doctest::Approx(1e-6 + (1e-4 - 1e-6) * 0.5).epsilon(1e-15));
  CHECK(s(99) == doctest::Approx(1e-6 + (1e-4 - 1e-6) * 0.99).epsilon(1e-15));
  CHECK(s(100) == 1e-4);  // warm-up end = base
  CHECK(s(600) == doctest::Approx(5.5e-5).epsilon(1e-14));  // halfway through the cosine: (base + min) / 2
  CHECK(s(350) == doctest::Approx(1e-5 + 9e-5 * 0.5 * (1 + std::cos(std::numbers::pi / 4))).epsilon(1e-14));
  CHECK(s(1099) > 1e-5);
  CHECK(s(1099) < 1.0001e-5);
  CHECK(s(1100) == 1e-5);
  CHECK(s(5000) == 1e-5);
  // monotone: up during the warm-up, down after
  for (std::int64_t i = 1; i < 1100; ++i) {
    if (i <= 100) CHECK(s(i) > s(i - 1));
    else CHECK(s(i) < s(i - 1));
  }
  // warm-up from 0 (the default), no warm-up, all warm-up
  const blip2::warmup_cosine_schedule z{.base_lr = 2.0, .min_lr = 0.0, .warmup_steps = 4, .total_steps = 8};
  CHECK(z(0) == 0.0);
  CHECK(z(1) == 0.5);
  CHECK(z(4) == 2.0);
  CHECK(z(6) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(z(8) == 0.0);
  const blip2::warmup_cosine_schedule nw{.base_lr = 1.0, .min_lr = 0.5, .warmup_steps = 0, .total_steps = 2};
  CHECK(nw(0) == 1.0);
  CHECK(nw(1) == doctest::Approx(0.75).epsilon(1e-15));
  CHECK(nw(2) == 0.5);
  const blip2::warmup_cosine_schedule aw{.base_lr = 1.0, .min_lr = 0.5, .warmup_steps = 2, .total_steps = 2};
  CHECK(aw(1) == 0.5);
  CHECK(aw(2) == 0.5);
  // errors
  CHECK_THROWS_AS(s(-1), blip2::value_error);
  CHECK_THROWS_AS((blip2::warmup_cosine_schedule{.warmup_steps = 10, .total_steps = 5}(0)), blip2::value_error);
  CHECK_THROWS_AS((blip2::warmup_cosine_schedule{.base_lr = -1}(0)), blip2::value_error);
}

TEST_CASE("lavis_linear_warmup_cosine_lr: LAVIS's epoch-based schedule") {
  // BLIP-2 pre-training (LAVIS configs): init_lr 1e-4, min_lr 1e-5, warmup_lr 1e-6, warmup_steps 5000, 10 epochs.
  auto lr = [](std::int64_t e, std::int64_t i) { return blip2::lavis_linear_warmup_cosine_lr(1e-4, 1e-5, 1e-6, 5000, 10, e, i); };
  CHECK(lr(0, 0) == 1e-6);
  CHECK(lr(0, 2500) == doctest::Approx(1e-6 + 99e-6 * 0.5).epsilon(1e-15));
  CHECK(lr(0, 5000) == 1e-4);
  CHECK(lr(0, 9000) == 1e-4);  // capped: the rest of epoch 0 at init_lr
  CHECK(lr(1, 0) == doctest::Approx(9e-5 * 0.5 * (1 + std::cos(std::numbers::pi * 0.1)) + 1e-5).epsilon(1e-15));
  CHECK(lr(1, 0) == lr(1, 12345));  // constant within an epoch
  CHECK(lr(5, 0) == doctest::Approx(5.5e-5).epsilon(1e-14));
  CHECK(lr(9, 0) > 1e-5);  // the last epoch never reaches min_lr
  CHECK(blip2::lavis_linear_warmup_cosine_lr(1e-4, 1e-5, -1, 5000, 10, 0, 0) == 1e-4);  // -1: no warm-up
  // warmup_steps 0: the divisor is max(0, 1) = 1, so step 0 still gets warmup_start_lr and step 1 init_lr
  CHECK(blip2::lavis_linear_warmup_cosine_lr(1e-4, 1e-5, 0, 0, 10, 0, 0) == 0.0);
  CHECK(blip2::lavis_linear_warmup_cosine_lr(1e-4, 1e-5, 0, 0, 10, 0, 1) == 1e-4);
}

TEST_CASE("clip_grad_norm: torch.nn.utils.clip_grad_norm_ semantics") {
  // torch: g = [3, 4], clip_grad_norm_(max_norm=1) -> 5.0, g = [0.5999999046325684, 0.7999998331069946] (float32)
  std::vector<float> g{3.0f, 4.0f};
  CHECK(blip2::clip_grad_norm(std::span<float>(g), 1.0) == 5.0);
  CHECK(g[0] == doctest::Approx(0.5999999046325684).epsilon(1e-7));
  CHECK(g[1] == doctest::Approx(0.7999998331069946).epsilon(1e-7));
  std::vector<double> d{3.0, 4.0};
  CHECK(blip2::clip_grad_norm(std::span<double>(d), 1.0) == 5.0);
  CHECK(d[0] == 3.0 * (1.0 / (5.0 + 1e-6)));
  CHECK(blip2::grad_norm(std::span<double>(d)) == doctest::Approx(1.0).epsilon(1e-6));
  // below the threshold: untouched
  std::vector<double> e{3.0, 4.0};
  CHECK(blip2::clip_grad_norm(std::span<double>(e), 10.0) == 5.0);
  CHECK(e == std::vector<double>{3.0, 4.0});
  // exactly at max_norm: torch's coefficient max/(norm + 1e-6) is just under 1, so it scales
  std::vector<double> a{3.0, 4.0};
  blip2::clip_grad_norm(std::span<double>(a), 5.0);
  CHECK(a[0] < 3.0);
  CHECK(a[0] == doctest::Approx(3.0).epsilon(1e-6));
  // the norm of many elements, accumulated in double (float squares would lose the small ones)
  std::vector<float> big(100000, 1e-3f);
  big[0] = 1000.0f;
  CHECK(blip2::grad_norm(std::span<float>(big)) ==
        doctest::Approx(std::sqrt(1e6 + 99999.0 * static_cast<double>(1e-3f) * static_cast<double>(1e-3f))).epsilon(1e-12));
  CHECK(blip2::grad_norm(std::span<float>(big)) > 1000.00004);  // a float sum would give 1000 exactly
  // non-finite: reported, gradients untouched
  std::vector<double> n{1.0, std::numeric_limits<double>::quiet_NaN(), 2.0};
  CHECK(std::isnan(blip2::clip_grad_norm(std::span<double>(n), 1.0)));
  CHECK(n[0] == 1.0);
  CHECK(n[2] == 2.0);
  std::vector<double> inf{1.0, std::numeric_limits<double>::infinity()};
  CHECK(std::isinf(blip2::clip_grad_norm(std::span<double>(inf), 1.0)));
  CHECK(inf[0] == 1.0);
  // empty, errors
  std::vector<double> none;
  CHECK(blip2::clip_grad_norm(std::span<double>(none), 1.0) == 0.0);
  CHECK_THROWS_AS(blip2::clip_grad_norm(std::span<double>(e), -1.0), blip2::value_error);
  CHECK_THROWS_AS(blip2::clip_grad_norm(std::span<double>(e), std::numeric_limits<double>::quiet_NaN()), blip2::value_error);
}

TEST_CASE("gradient accumulation: k micro-batches of b give the update of one batch of k*b (mean loss)") {
  // Linear regression y ~ w.x + c, loss = mean over the batch of 0.5 (w.x + c - y)^2; gradients accumulate
  // (+=) into one arena as the library's backward passes do.
  const int D = 5, k = 4, b = 3, N = k * b;
  std::vector<std::vector<double>> x(N, std::vector<double>(D));
  std::vector<double> y(N);
  for (int i = 0; i < N; ++i) {
    for (int j = 0; j < D; ++j) x[i][j] = pseudo(11, static_cast<std::uint64_t>(i * D + j));
    y[i] = pseudo(12, static_cast<std::uint64_t>(i));
  }
  // backward of the mean loss over rows [r0, r0 + rows), its gradient scaled by `scale`, added to g
  auto backward = [&](const std::vector<double>& p, std::vector<double>& g, int r0, int rows, double scale) {
    for (int i = r0; i < r0 + rows; ++i) {
      double pred = p[D];
      for (int j = 0; j < D; ++j) pred += p[j] * x[i][j];
      const double dpred = scale * (pred - y[i]) / rows;
      for (int j = 0; j < D; ++j) g[j] += dpred * x[i][j];
      g[D] += dpred;
    }
  };
  std::vector<double> p0(D + 1);
  for (int j = 0; j <= D; ++j) p0[j] = pseudo(13, static_cast<std::uint64_t>(j));
  const blip2::warmup_cosine_schedule sched{.base_lr = 0.05, .min_lr = 0.005, .warmup_steps = 2, .total_steps = 10};
  const std::vector<blip2::param_segment> segs{{"w", 0, D, true}, {"c", D, 1, false}};

  // one batch of k*b per step
  std::vector<double> p_full = p0, g_full(D + 1);
  blip2::adamw<double> opt_full(D + 1, {}, segs);
  // k micro-batches of b per step, loss gradient scaled by 1/k
  std::vector<double> p_acc = p0, g_acc(D + 1);
  blip2::adamw<double> opt_acc(D + 1, {}, segs);
  const blip2::grad_accumulation acc{k};
  // the alternative: unscaled micro-batch losses, then scale_grad(1/k)
  std::vector<double> p_alt = p0, g_alt(D + 1);
  blip2::adamw<double> opt_alt(D + 1, {}, segs);

  for (std::int64_t step = 0; step < 10; ++step) {
    std::fill(g_full.begin(), g_full.end(), 0.0);
    backward(p_full, g_full, 0, N, 1.0);
    blip2::clip_grad_norm(std::span<double>(g_full), 1.0);
    opt_full.step(p_full, g_full, sched(step));

    for (std::int64_t micro = step * k; micro < (step + 1) * k; ++micro) {
      if (acc.begins_step(micro)) {
        std::fill(g_acc.begin(), g_acc.end(), 0.0);
        std::fill(g_alt.begin(), g_alt.end(), 0.0);
      }
      const int r0 = static_cast<int>(micro % k) * b;
      backward(p_acc, g_acc, r0, b, acc.loss_scale());
      backward(p_alt, g_alt, r0, b, 1.0);
      if (acc.ends_step(micro)) {
        CHECK(micro / k == step);
        blip2::clip_grad_norm(std::span<double>(g_acc), 1.0);
        opt_acc.step(p_acc, g_acc, sched(micro / k));
        blip2::scale_grad(std::span<double>(g_alt), 1.0 / k);
        blip2::clip_grad_norm(std::span<double>(g_alt), 1.0);
        opt_alt.step(p_alt, g_alt, sched(micro / k));
      }
    }
    if (step == 0) {
      for (int j = 0; j <= D; ++j) {
        CHECK(g_acc[j] == doctest::Approx(g_full[j]).epsilon(1e-13));
        CHECK(g_alt[j] == doctest::Approx(g_full[j]).epsilon(1e-13));
      }
    }
  }
  for (int j = 0; j <= D; ++j) {
    CAPTURE(j);
    CHECK(p_full[j] != p0[j]);
    CHECK(std::abs(p_acc[j] - p_full[j]) < 1e-12);
    CHECK(std::abs(p_alt[j] - p_full[j]) < 1e-12);
  }
  CHECK_THROWS_AS((blip2::grad_accumulation{0}.loss_scale()), blip2::value_error);
}
