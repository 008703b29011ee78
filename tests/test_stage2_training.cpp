// stage2_training: the pieces of BLIP-2's two-stage recipe with an OPT decoder that train.
//   [fd]      lm_forward / lm_backward (train/lm_step.hpp): every sampled parameter's gradient of the
//             next-token loss against central differences in double (tolerance as harness/gradcheck.hpp:
//             |a - n| <= 1e-7 + 1e-5 |n|; truncation and round-off are ~1e-11 in double)
//   [learn]   a tiny decoder pretrained on a toy corpus with AdamW learns it: the loss falls to within 0.01
//             of the corpus's floor (the token after BOS is a coin flip between the two sentences: ln 2 on
//             2 of the 10 targets, 0.1386 nats on average; every other token is determined), and greedy
//             decoding through the KV cache continues a prompt as the corpus does
//   [stage2]  stage2_trainer on the tiny BLIP-2 fixture: the loss falls by more than 10% in 40 steps (only
//             the soft prompt can move: the random decoder's text-to-text predictions stay), the frozen
//             decoder's weights do
//             not move (bitwise), two runs are bitwise identical, and accumulating two copies of a batch
//             gives the step of one
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/generate/generate.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/models/opt/session.hpp"
#include "blip2/train/lm_step.hpp"
#include "blip2/train/stage2_trainer.hpp"

using namespace blip2;

namespace {

opt_config tiny_lm(index_t V) {
  opt_config c;
  c.vocab_size = V;
  c.hidden_size = 16;
  c.word_embed_proj_dim = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.ffn_dim = 32;
  c.max_position_embeddings = 16;
  c.bos_token_id = 2, c.eos_token_id = 2, c.pad_token_id = 1;
  return c;
}

template <class T>
void init(opt_model<T>& m, std::uint64_t seed) {
  auto p = m.parameters();
  for (std::size_t k = 0; k < p.size(); ++k) p[k] = static_cast<T>(0.2 * (2 * uniform_double(seed, k) - 1));
  for (auto& l : m.w.layers)
    for (auto* n : {&l.self.norm, &l.ffn.norm})
      for (index_t k = 0; k < n->weight.size(); ++k) n->weight(k) = T(1);
  for (index_t k = 0; k < m.w.final_norm.weight.size(); ++k) m.w.final_norm.weight(k) = T(1);
}

}  // namespace

TEST_CASE("[fd] the next-token loss of an OPT decoder: every sampled parameter's gradient") {
  opt_model<double> m(tiny_lm(19), opt_storage::with_gradients);
  init(m, 3);
  const std::vector<index_t> ids = {2, 5, 9, 4, 1, /**/ 2, 7, 7, 3, 11};
  const std::vector<index_t> mask = {1, 1, 1, 1, 0, /**/ 1, 1, 1, 1, 1};
  const tensor_view<const index_t, 2> iv(ids.data(), {2, 5}), mv(mask.data(), {2, 5});
  reference_backend be;
  lm_state<double> st;
  m.zero_grad(be);
  lm_forward(be, m, st, iv, mv);
  lm_backward(be, m, st);
  const std::vector<double> g(m.gradients().begin(), m.gradients().end());
  auto p = m.parameters();
  const double h = 1e-5;
  double worst = 0;
  for (std::size_t k = 0; k < p.size(); k += 7) {
    const double keep = p[k];
    p[k] = keep + h;
    const double up = lm_forward(be, m, st, iv, mv);
    p[k] = keep - h;
    const double down = lm_forward(be, m, st, iv, mv);
    p[k] = keep;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(g[k] - numeric) / (1e-7 + 1e-5 * std::abs(numeric)));
  }
  CHECK(worst <= 1.0);
  // a frozen decoder refuses to train
  opt_model<double> frozen(tiny_lm(19));
  CHECK_THROWS_WITH_AS(lm_backward(be, frozen, st), doctest::Contains("no gradient arena"), value_error);
}

TEST_CASE("[learn] a tiny decoder pretrained with AdamW learns a toy corpus, then continues it greedily") {
  // "2 a b c d e" and "2 f g h i e": the first token after BOS decides the rest
  const std::vector<index_t> ids = {2, 4, 5, 6, 7, 3, /**/ 2, 8, 9, 10, 11, 3};
  const std::vector<index_t> mask(12, 1);
  opt_model<float> m(tiny_lm(12), opt_storage::with_gradients);
  init(m, 9);
  reference_backend be;
  lm_state<float> st;
  adamw_options ao;
  ao.weight_decay = 0.0;
  adamw<float> opt(static_cast<index_t>(m.parameters().size()), ao, opt_decay_groups(m.config()));
  float loss = 0, first = 0;
  for (int step = 0; step < 300; ++step) {
    m.zero_grad(be);
    loss = lm_forward(be, m, st, tensor_view<const index_t, 2>(ids.data(), {2, 6}),
                      tensor_view<const index_t, 2>(mask.data(), {2, 6}));
    if (step == 0) first = loss;
    lm_backward(be, m, st);
    opt.step(m.parameters(), std::span<const float>(m.gradients()), 3e-3);
  }
  MESSAGE("toy corpus: next-token loss ", first, " -> ", loss);
  CHECK(first > 1.5f);
  CHECK(loss < static_cast<float>(0.2 * std::log(2.0) + 0.01));
  // prompt "2 f" continues "g h i" then 3
  const std::vector<float> prompt = [&] {
    std::vector<float> e;
    for (index_t id : {2, 8})
      for (index_t d = 0; d < m.config().word_embed_proj_dim; ++d) e.push_back(m.w.embed_tokens(id, d));
    return e;
  }();
  const std::vector<index_t> pm = {1, 1};
  opt_session<reference_backend> s(be, m);
  s.start(tensor_view<const float, 2>(prompt.data(), {2, m.config().word_embed_proj_dim}),
          tensor_view<const index_t, 2>(pm.data(), {1, 2}), 6);
  generation_options g;
  g.max_new_tokens = 6;
  g.eos_token_id = 3;
  g.pad_token_id = 1;
  const auto out = generate(s, g);
  CHECK(out[0].ids == std::vector<std::int32_t>({9, 10, 11}));
  CHECK(out[0].ended_with_eos);
}

TEST_CASE("[stage2] stage2_trainer: the loss falls, the decoder stays frozen, runs repeat, accumulation averages") {
  const auto dir = std::filesystem::path(BLIP2_FIXTURE_DIR) / "stage2_opt";
  const auto inputs = safetensors_file::open(dir / "inputs.safetensors");
  const auto img = inputs.load_dynamic<float>("image_embeds");
  const auto ids = inputs.load_i64<2>("input_ids");
  const auto mask = inputs.load_i64<2>("attention_mask");
  const auto labels = inputs.load_i64<2>("labels");
  const stage2_batch<float> batch{tensor_view<const float, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]}),
                                  ids.view(), mask.view(), labels.view()};
  reference_backend be;
  auto run = [&](int steps, int copies) {
    auto m = load_blip2_opt<float>(dir);
    const std::vector<float> llm_before(m.llm.w.layers[0].ffn.intermediate.weight.data(),
                                        m.llm.w.layers[0].ffn.intermediate.weight.data() + m.llm.w.layers[0].ffn.intermediate.weight.size());
    stage2_trainer<float> tr(m);
    std::vector<stage2_batch<float>> micro(static_cast<std::size_t>(copies), batch);
    std::vector<double> losses;
    for (int s = 0; s < steps; ++s) losses.push_back(tr.step(be, m, std::span<const stage2_batch<float>>(micro), 1e-2, 1.0).loss);
    const auto& w = m.llm.w.layers[0].ffn.intermediate.weight;
    CHECK(std::equal(llm_before.begin(), llm_before.end(), w.data()));  // frozen: bitwise unchanged
    std::vector<float> q(m.qformer.parameters().begin(), m.qformer.parameters().end());
    return std::pair{losses, q};
  };
  const auto [losses, q] = run(40, 1);
  MESSAGE("stage 2 on the fixture batch: loss ", losses.front(), " -> ", losses.back());
  CHECK(losses.back() < 0.9 * losses.front());
  const auto [losses2, q2] = run(40, 1);
  CHECK(losses2 == losses);
  CHECK(q2 == q);
  const auto [losses3, q3] = run(2, 2);  // two copies of the batch = the batch
  const auto [losses4, q4] = run(2, 1);
  CHECK(losses3 == losses4);
  double diff = 0;
  for (std::size_t k = 0; k < q3.size(); ++k) diff = std::max(diff, static_cast<double>(std::abs(q3[k] - q4[k])));
  CHECK(diff <= 1e-6);  // (g + g) / 2 rounds like g: equal up to float rounding of the sum's halving
}
