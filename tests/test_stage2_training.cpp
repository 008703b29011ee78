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
//   [stage2-ckpt] io/stage2_checkpoint.hpp: 2N steps equal, bitwise (losses, every Q-Former and projection
//             parameter, both optimisers' moments), N steps + save + load into a freshly loaded model and
//             a new trainer + N steps; a checkpoint is refused against a decoder of another configuration
//             (the differing keys named), a truncated file, a stage-1 training checkpoint, a reshaped
//             moment (both shapes named) and an extra tensor are refused naming the file, and a refused
//             file leaves model and trainer untouched
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/generate/generate.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/stage2_checkpoint.hpp"
#include "blip2/models/opt/session.hpp"
#include "blip2/train/lm_step.hpp"
#include "blip2/train/stage2_trainer.hpp"
#include "harness/temp_dir.hpp"

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

const std::filesystem::path stage2_dir = std::filesystem::path(BLIP2_FIXTURE_DIR) / "stage2_opt";

// The stage2_opt fixture's batch (host memory, owned here).
struct fixture_batch {
  safetensors_file inputs = safetensors_file::open(stage2_dir / "inputs.safetensors");
  dynamic_tensor<float> img = inputs.load_dynamic<float>("image_embeds");
  host_tensor<std::int64_t, 2> ids = inputs.load_i64<2>("input_ids");
  host_tensor<std::int64_t, 2> mask = inputs.load_i64<2>("attention_mask");
  host_tensor<std::int64_t, 2> labels = inputs.load_i64<2>("labels");
  stage2_batch<float> batch() {
    return {tensor_view<const float, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]}), ids.view(),
            mask.view(), labels.view()};
  }
};

// `steps` stage-2 steps at lr 1e-2, clip 1; the losses.
std::vector<double> train_steps(reference_backend& be, blip2_opt_model<float>& m, stage2_trainer<float>& tr,
                                std::span<const stage2_batch<float>> micro, int steps) {
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) losses.push_back(tr.step(be, m, micro, 1e-2, 1.0).loss);
  return losses;
}

template <class X>
std::vector<std::uint64_t> bits(const X& xs) {
  std::vector<std::uint64_t> out;
  for (auto x : xs) {
    if constexpr (sizeof(x) == 4)
      out.push_back(std::bit_cast<std::uint32_t>(x));
    else
      out.push_back(std::bit_cast<std::uint64_t>(x));
  }
  return out;
}

// What stage 2 trains and what a checkpoint restores, as bit patterns (== is bitwise).
struct trained_bits {
  std::vector<std::uint64_t> qformer, projection, q_avg, q_avg_sq, p_avg, p_avg_sq;
  std::int64_t q_steps = 0, p_steps = 0;
  friend bool operator==(const trained_bits&, const trained_bits&) = default;
};
trained_bits trained(blip2_opt_model<float>& m, const stage2_trainer<float>& tr) {
  const auto pv = m.projection.parameter_view();
  return {bits(m.qformer.parameters()),
          bits(std::span<const float>(pv.data(), static_cast<std::size_t>(pv.size()))),
          bits(tr.qformer_optimizer().exp_avg()),
          bits(tr.qformer_optimizer().exp_avg_sq()),
          bits(tr.projection_optimizer().exp_avg()),
          bits(tr.projection_optimizer().exp_avg_sq()),
          tr.qformer_optimizer().step_count(),
          tr.projection_optimizer().step_count()};
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
  fixture_batch fx;
  const stage2_batch<float> batch = fx.batch();
  reference_backend be;
  auto run = [&](int steps, int copies) {
    auto m = load_blip2_opt<float>(stage2_dir);
    const std::vector<float> llm_before(m.llm.w.layers[0].ffn.intermediate.weight.data(),
                                        m.llm.w.layers[0].ffn.intermediate.weight.data() + m.llm.w.layers[0].ffn.intermediate.weight.size());
    stage2_trainer<float> tr(m);
    const std::vector<stage2_batch<float>> micro(static_cast<std::size_t>(copies), batch);
    const std::vector<double> losses = train_steps(be, m, tr, micro, steps);
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

TEST_CASE("[stage2-ckpt] a resumed stage-2 run is bitwise identical to an uninterrupted one") {
  fixture_batch fx;
  const stage2_batch<float> batch = fx.batch();
  const std::span<const stage2_batch<float>> micro(&batch, 1);
  reference_backend be;
  const blip2::testing::temp_dir tmp;
  const auto path = tmp / "stage2.safetensors";
  constexpr int N = 3;

  auto a = load_blip2_opt<float>(stage2_dir);
  stage2_trainer<float> ta(a);
  const std::vector<double> uninterrupted = train_steps(be, a, ta, micro, 2 * N);

  std::vector<double> resumed;
  {
    auto b = load_blip2_opt<float>(stage2_dir);
    stage2_trainer<float> tb(b);
    resumed = train_steps(be, b, tb, micro, N);
    save_stage2_checkpoint(path, b, tb, N, rng_state{11, 7});
  }
  auto c = load_blip2_opt<float>(stage2_dir);  // the fixture's weights, a new trainer
  stage2_trainer<float> tc(c, {.beta1 = 0.5, .beta2 = 0.5, .eps = 1e-3, .weight_decay = 0.5});
  const training_checkpoint_state st = load_stage2_checkpoint(path, c, tc);
  CHECK(st.step == N);
  CHECK(st.rng == rng_state{11, 7});
  CHECK(tc.qformer_optimizer().step_count() == N);
  CHECK(tc.projection_optimizer().step_count() == N);
  CHECK(tc.projection_optimizer().options().beta2 == 0.98);  // the file's hyper-parameters, as torch's load_state_dict
  const std::vector<double> rest = train_steps(be, c, tc, micro, N);
  resumed.insert(resumed.end(), rest.begin(), rest.end());

  CHECK(bits(resumed) == bits(uninterrupted));
  const trained_bits ua = trained(a, ta), rc = trained(c, tc);
  CHECK(rc.qformer == ua.qformer);
  CHECK(rc.projection == ua.projection);
  CHECK(rc == ua);  // the moments and step counts too
  CHECK(resumed.back() < resumed.front());

  // the file: the trained tensors and their moments, no decoder weight
  const auto f = safetensors_file::open(path);
  CHECK(f.metadata().at("blip2.kind") == "stage2_checkpoint");
  CHECK(f.metadata().at("blip2.decoder.config").find("ffn_dim=36;") != std::string::npos);
  CHECK(f.info("language_projection.weight").shape == std::vector<index_t>{16, c.qformer.config().qformer.hidden_size});
  CHECK(f.contains("optimizer.exp_avg.language_projection.bias"));
  CHECK(f.contains("optimizer.exp_avg_sq.query_tokens"));
  std::size_t qformer_tensors = 0;
  for_each_parameter(c.qformer.config(), c.qformer.w, [&](const std::string&, auto&) { ++qformer_tensors; });
  CHECK(f.size() == 3 * (qformer_tensors + 2));
  for (const auto& t : f.tensors()) CHECK(t.name.find("language_model") == std::string::npos);
}

TEST_CASE("[stage2-ckpt] refused: another decoder, a truncated file, a stage-1 checkpoint; nothing is written") {
  fixture_batch fx;
  const stage2_batch<float> batch = fx.batch();
  reference_backend be;
  const blip2::testing::temp_dir tmp;
  const auto path = tmp / "stage2.safetensors";
  {
    auto m = load_blip2_opt<float>(stage2_dir);
    stage2_trainer<float> tr(m);
    train_steps(be, m, tr, std::span<const stage2_batch<float>>(&batch, 1), 2);
    save_stage2_checkpoint(path, m, tr, 2, rng_state{1, 2});
  }
  // Loading `file` into (m, a new trainer) must throw E with every one of `what` in its message, and
  // leave the model and the trainer as they were.
  auto refused = [&]<class E>(const std::filesystem::path& file, blip2_opt_model<float>& m,
                              const std::vector<std::string>& what) {
    stage2_trainer<float> tr(m);
    const trained_bits before = trained(m, tr);
    std::string msg;
    try {
      load_stage2_checkpoint(file, m, tr);
    } catch (const E& e) {
      msg = e.what();
    }
    INFO(msg);
    CHECK(!msg.empty());
    for (const auto& w : what) {
      CAPTURE(w);
      CHECK(msg.find(w) != std::string::npos);
    }
    CHECK(trained(m, tr) == before);
  };

  SUBCASE("a decoder of another configuration: each differing key named with both values") {
    auto m = load_blip2_opt<float>(stage2_dir);
    opt_config other = m.llm.config();
    other.ffn_dim = 40;
    other.eos_token_id = 2;
    blip2_opt_model<float> with_other{std::move(m.qformer), std::move(m.projection), opt_model<float>(other)};
    refused.template operator()<format_error>(path, with_other,
                                              {path.string(), "saved against another decoder",
                                               "ffn_dim is 36 in the file but 40 in the model",
                                               "eos_token_id is 314 in the file but 2 in the model"});
  }
  SUBCASE("a truncated file: format_error naming the file") {
    std::ifstream in(path, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(bytes.size() > 1000);
    const auto cut = tmp / "truncated.safetensors";
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 100));
    auto m = load_blip2_opt<float>(stage2_dir);
    refused.template operator()<format_error>(cut, m, {cut.string()});
  }
  SUBCASE("a stage-1 training checkpoint is not a stage-2 checkpoint") {
    auto m = load_blip2_opt<float>(stage2_dir);
    const auto stage1 = tmp / "stage1.safetensors";
    save_training_checkpoint(stage1, m.qformer, make_adamw(m.qformer), 0, {});
    refused.template operator()<format_error>(stage1, m,
                                              {stage1.string(), "'blip2.kind' is \"training_checkpoint\", not \"stage2_checkpoint\""});
  }
  SUBCASE("a reshaped moment: shape_error naming the tensor and both shapes; an extra tensor: format_error") {
    const auto src = safetensors_file::open(path);
    // the file again, with `name` replaced by `extra` (or `extra` added)
    auto rewrite = [&](const std::filesystem::path& out, const std::string& name, safetensors_entry extra) {
      std::vector<safetensors_entry> es;
      for (const auto& t : src.tensors())
        if (t.name != name) es.emplace_back(t.name, t.dtype, t.shape, src.bytes(t.name));
      es.push_back(std::move(extra));
      save_safetensors(out, es, src.metadata());
    };
    const auto reshaped = tmp / "reshaped.safetensors";
    const auto& bias = src.info("optimizer.exp_avg.language_projection.bias");
    rewrite(reshaped, bias.name, safetensors_entry(bias.name, bias.dtype, {2, 8}, src.bytes(bias.name)));
    auto m = load_blip2_opt<float>(stage2_dir);
    refused.template operator()<shape_error>(reshaped, m,
                                             {reshaped.string(), "tensor 'optimizer.exp_avg.language_projection.bias' "
                                                                 "has shape (2, 8) but the model's is (16)"});
    const auto extra = tmp / "extra.safetensors";
    rewrite(extra, "", safetensors_entry::of("language_model.lm_head.weight", m.llm.w.embed_tokens));
    refused.template operator()<format_error>(extra, m, {extra.string(), "unexpected tensor 'language_model.lm_head.weight'"});
  }
  SUBCASE("the same decoder: the load succeeds") {
    auto m = load_blip2_opt<float>(stage2_dir);
    stage2_trainer<float> tr(m);
    CHECK(load_stage2_checkpoint(path, m, tr).rng == rng_state{1, 2});
  }
}
