// stage1_errors: the stage-1 step (train/stage1_step.hpp) on bad inputs, and training resumed from a
// checkpoint. Every case is a clear error (a blip2::error whose message names what is wrong) or a
// documented behaviour checked here; none crashes and none returns a silently wrong loss.
//
// Documented behaviours (LAVIS Blip2Qformer.forward / Hugging Face BERT semantics):
//   - A batch of one pair has no ITM negative: the samplers throw value_error ("a batch of one pair"),
//     and fixed negatives (spans or fixed_sampler) are refused because the only candidate is the pair
//     itself. (LAVIS would draw the positive: softmax over the single masked logit is 1.) With ITM's
//     weight 0 the step works: ITC over one pair is a 1 x 1 softmax, so loss_itc is exactly 0 and ITC
//     sends no gradient (temp, the projections); ITG is unaffected.
//   - A text whose attention_mask row is all 0: the additive mask (1 - m) * -10000 shifts every score of
//     that row by the same amount, so in the text pass the row attends as if it were unmasked (the
//     softmax is shift-invariant; checked in double, where score - 10000 loses nothing that matters); in
//     the ITM and ITG passes the queries stay unmasked and win by 10000, so the text attends to the
//     queries only. Losses and gradients are finite. ITG's labels come from input_ids (pad_token_id ->
//     ignored), not from the mask, as in LAVIS; when every label is ignored loss_itg is 0 (PyTorch: NaN)
//     and ITG sends no gradient.
//   - temp (ITC's temperature, no clamp in Blip2Qformer) of 0, NaN or inf: value_error naming temp,
//     before any backward. A NaN in the image embeddings: the hard-negative sampler refuses the
//     non-finite similarities (value_error naming sim_i2t); with ITM's weight 0 the losses come back NaN
//     (visible, not finite-looking) and clip_grad_norm reports a NaN norm, leaving the gradients as they
//     are, so the caller skips the update.
//   - A training checkpoint of another configuration: format_error naming the file and each key that
//     differs; a corrupted or truncated file: format_error naming the file; the model and optimiser are
//     left untouched. Dropout rates are not part of the architecture: a run may resume with other ones.
//     (safetensors has no checksum: a flipped byte in the tensor data is not detectable.)
// And the resume test: 6 steps of the real stage-1 step (sampled hard negatives, dropout 0.1, AdamW with
// decay groups, warm-up + cosine, clipping) equal, bitwise, 3 steps + save + load into a fresh model and
// optimiser + 3 steps.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/io/hf_config.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/training_checkpoint.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/mining/fixed_sampler.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"
#include "blip2/train/stage1_step.hpp"
#include "harness/expect_error.hpp"
#include "harness/stage1_batch.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;
using blip2::testing::temp_dir;
namespace fs = std::filesystem;

using blip2::testing::has;
using blip2::testing::message_of;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;

const fs::path& tmp() {
  static temp_dir d;
  return d.path;
}

// The configuration of a stage-1 fixture, with the stage-1 heads; dropout >= 0 replaces both rates.
qformer_model_config fixture_config(const std::string& fixture, double dropout = -1) {
  auto mc = to_model_config(load_blip2_config(fixtures / fixture / "config.json"), true);
  mc.with_stage1_heads = true;
  if (dropout >= 0) mc.qformer.hidden_dropout_prob = mc.qformer.attention_probs_dropout_prob = dropout;
  return mc;
}

// The fixture's weights in a model of that configuration (possibly with other dropout rates).
template <class T>
qformer_model<T> fixture_model(const std::string& fixture, double dropout = -1) {
  qformer_model<T> m(fixture_config(fixture, dropout));
  load_qformer_weights(m, safetensors_file::open(fixtures / fixture / "model.safetensors"));
  return m;
}

// A batch held in vectors (view() makes the stage1_batch), and a synthetic one: tests/harness/stage1_batch.hpp.
template <class F>
using batch_data = blip2::testing::stage1_batch_data<F>;

template <class T>
batch_data<T> fixture_batch(const std::string& fixture) {
  const auto in = safetensors_file::open(fixtures / fixture / "inputs.safetensors");
  batch_data<T> b;
  const auto img = in.load_dynamic<T>("image_embeds");
  b.B = img.shape[0], b.N = img.shape[1], b.E = img.shape[2];
  b.image = img.data;
  const auto ids = in.load_dynamic<index_t>("input_ids");
  b.T = ids.shape[1];
  b.ids = ids.data;
  b.mask = in.load_dynamic<index_t>("attention_mask").data;
  if (in.contains("image_ids")) b.image_ids = in.load_dynamic<index_t>("image_ids").data;
  return b;
}

batch_data<float> synthetic_batch(index_t B, std::uint64_t seed) { return blip2::testing::synthetic_stage1_batch(B, seed); }

// One step from zeroed gradients on the reference backend.
template <class T, class Sampler>
stage1_losses one_step(qformer_model<T>& m, stage1_state<T>& st, const batch_data<T>& b, Sampler& sampler,
                       const stage1_options& opt = {}, std::span<const index_t> neg_image = {},
                       std::span<const index_t> neg_text = {}) {
  reference_backend be;
  m.zero_grad();
  return stage1_step(be, m, st, b.view(), sampler, opt, neg_image, neg_text);
}

template <class T>
bool all_finite(std::span<const T> v) {
  for (T x : v)
    if (!std::isfinite(x)) return false;
  return true;
}
template <class T>
bool all_finite(std::span<T> v) {
  return all_finite(std::span<const T>(v));
}

template <class T>
double max_abs_grad(qformer_model<T>& m, const std::string& which) {
  double out = -1;
  for_each_parameter(m.config(), m.g, [&](const std::string& name, auto& g) {
    if (name != which) return;
    out = 0;
    for (index_t k = 0; k < g.size(); ++k) out = std::max(out, std::abs(static_cast<double>(g.data()[k])));
  });
  REQUIRE(out >= 0);  // the parameter exists
  return out;
}

std::vector<char> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_file(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

template <class T>
bool bitwise_equal(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
template <class T>
bool bitwise_equal(std::span<T> a, std::span<T> b) {
  return bitwise_equal(std::span<const T>(a), std::span<const T>(b));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("stage-1 errors: a batch of one pair") {
  auto m = fixture_model<float>("stage1_padded");
  const auto one = fixture_batch<float>("stage1_padded").first(1);
  stage1_state<float> st;

  SUBCASE("ITM with the BLIP-2 sampler: value_error, no negative exists") {
    blip2_sampler s;
    const auto msg = message_of<value_error>([&] { one_step(m, st, one, s); });
    INFO(msg);
    CHECK(has(msg, "blip2_sampler"));
    CHECK(has(msg, "a batch of one pair"));
  }
  SUBCASE("ITM with fixed_sampler: value_error") {
    fixed_sampler s({0}, {0});
    const auto msg = message_of<value_error>([&] { one_step(m, st, one, s); });
    INFO(msg);
    CHECK(has(msg, "a batch of one pair"));
  }
  SUBCASE("ITM with fixed negatives given as spans: the only candidate is the pair itself, refused") {
    blip2_sampler unused;
    const index_t zero[1] = {0};
    const auto msg = message_of<value_error>([&] { one_step(m, st, one, unused, {}, zero, zero); });
    INFO(msg);
    CHECK(has(msg, "fixed negative of pair 0"));
    CHECK(has(msg, "is a positive"));
  }
  SUBCASE("ITM's weight 0: ITC over one pair is 0 with no gradient, ITG as usual") {
    for (const bool ids : {false, true}) {
      CAPTURE(ids);
      auto b = one;
      if (ids) b.image_ids = {7};
      blip2_sampler s;  // never called
      stage1_options opt;
      opt.weights.itm = 0;
      const auto l = one_step(m, st, b, s, opt);
      CHECK(l.itc == 0.0);  // log_softmax of a single logit is exactly 0, smoothing or not
      CHECK(l.itm == 0.0);
      CHECK(std::isfinite(l.itg));
      CHECK(l.itg > 0);
      CHECK(l.total == l.itg);
      CHECK(all_finite(m.gradients()));
      CHECK(max_abs_grad(m, "temp") == 0.0);
      CHECK(max_abs_grad(m, "text_projection.weight") == 0.0);
      CHECK(max_abs_grad(m, "vision_projection.weight") == 0.0);
      CHECK(max_abs_grad(m, "itm_head.weight") == 0.0);
      CHECK(max_abs_grad(m, "cls.predictions.bias") > 0.0);  // ITG trains
    }
  }
  SUBCASE("no pairs at all: an error, not a crash") {
    auto none = one;
    none.B = 0;
    none.image.clear();
    none.ids.clear();
    none.mask.clear();
    blip2_sampler s;
    stage1_options opt;
    opt.weights.itm = 0;
    const auto msg = message_of<blip2::error>([&] { one_step(m, st, none, s, opt); });
    INFO(msg);
    CHECK(has(msg, "batch must be positive"));
  }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("stage-1 errors: text rows that are all padding") {
  SUBCASE("one row's mask all 0: finite; in the text pass the row attends as if unmasked") {
    auto m = fixture_model<double>("stage1_padded");
    auto b = fixture_batch<double>("stage1_padded");  // row 1: 4 tokens then 2 pads
    const index_t T = b.T;
    stage1_state<double> masked, unmasked;
    fixed_sampler neg({2, 0, 1}, {2, 0, 1});
    auto b0 = b;
    for (index_t t = 0; t < T; ++t) b0.mask[static_cast<std::size_t>(T + t)] = 0;
    const auto l0 = one_step(m, masked, b0, neg);
    CHECK(std::isfinite(l0.itc));
    CHECK(std::isfinite(l0.itm));
    CHECK(std::isfinite(l0.itg));
    CHECK(all_finite(m.gradients()));
    auto b1 = b;
    for (index_t t = 0; t < T; ++t) b1.mask[static_cast<std::size_t>(T + t)] = 1;
    one_step(m, unmasked, b1, neg);
    // text_feat of row 1 ([CLS] of the text pass, projected and normalised): the -10000 shift cancels
    double maxdiff = 0;
    const auto D = masked.text_proj.feats.extent(1);
    for (index_t d = 0; d < D; ++d)
      maxdiff = std::max(maxdiff, std::abs(masked.text_proj.feats(1, d) - unmasked.text_proj.feats(1, d)));
    CHECK(maxdiff < 1e-9);
    // while rows 0 and 2 are untouched by row 1's mask
    for (const index_t r : {0, 2})
      for (index_t d = 0; d < D; ++d) CHECK(masked.text_proj.feats(r, d) == unmasked.text_proj.feats(r, d));
  }
  SUBCASE("every row [CLS] + padding, masks all 0: loss_itg is 0 (no label counts), the rest finite") {
    auto m = fixture_model<float>("stage1_padded");
    auto b = fixture_batch<float>("stage1_padded");
    for (index_t r = 0; r < b.B; ++r)
      for (index_t t = 0; t < b.T; ++t) {
        const auto k = static_cast<std::size_t>(r * b.T + t);
        b.ids[k] = t == 0 ? 1 : 0;  // pad_token_id 0
        b.mask[k] = 0;
      }
    stage1_state<float> st;
    blip2_sampler s;  // the sampler sees finite similarities
    stage1_options opt;
    opt.seed = 3;
    const auto l = one_step(m, st, b, s, opt);
    CHECK(std::isfinite(l.itc));
    CHECK(std::isfinite(l.itm));
    CHECK(l.itg == 0.0);  // PyTorch's mean over zero tokens would be NaN
    CHECK(all_finite(m.gradients()));
    CHECK(max_abs_grad(m, "cls.predictions.bias") == 0.0);
    CHECK(max_abs_grad(m, "cls.predictions.transform.dense.weight") == 0.0);
  }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("stage-1 errors: a temperature of zero, NaN or inf, and NaN inputs") {
  auto m = fixture_model<float>("stage1_padded");
  const auto b = fixture_batch<float>("stage1_padded");
  stage1_state<float> st;
  blip2_sampler s;
  const float good = m.w.temp();
  for (const float bad : {0.0f, -0.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    m.w.temp() = bad;
    for (const bool itc : {true, false}) {  // ITM alone reads the ITC similarities too
      CAPTURE(itc);
      stage1_options opt;
      if (!itc) opt.weights.itc = 0;
      const auto msg = message_of<value_error>([&] { one_step(m, st, b, s, opt); });
      INFO(msg);
      CHECK(has(msg, "temp = "));
      CHECK(has(msg, "finite and non-zero"));
    }
    // ITG alone does not use temp
    stage1_options itg_only;
    itg_only.weights.itc = itg_only.weights.itm = 0;
    CHECK(std::isfinite(one_step(m, st, b, s, itg_only).itg));
  }
  m.w.temp() = good;

  SUBCASE("a NaN image embedding: the sampler refuses the similarities") {
    auto bad = b;
    bad.image[3] = std::numeric_limits<float>::quiet_NaN();
    const auto msg = message_of<value_error>([&] { one_step(m, st, bad, s); });
    INFO(msg);
    CHECK(has(msg, "blip2_sampler"));
    CHECK(has(msg, "is not finite"));
  }
  SUBCASE("a NaN image embedding without ITM: NaN losses, a NaN norm, the update skipped") {
    auto bad = b;
    bad.image[3] = std::numeric_limits<float>::quiet_NaN();
    stage1_options opt;
    opt.weights.itm = 0;
    const auto l = one_step(m, st, bad, s, opt);
    CHECK(std::isnan(l.itc));
    CHECK(std::isnan(l.total));
    const std::vector<float> before(m.gradients().begin(), m.gradients().end());
    const double norm = clip_grad_norm(m.gradients(), 1.0);
    CHECK(!std::isfinite(norm));
    CHECK(std::memcmp(before.data(), m.gradients().data(), before.size() * sizeof(float)) == 0);  // untouched
  }
}

// ---------------------------------------------------------------------------------------------------------
TEST_CASE("stage-1 errors: checkpoints of another configuration, corrupted or truncated") {
  // a checkpoint of the stage1_padded model after one real step
  const fs::path saved = tmp() / "padded.safetensors";
  {
    auto m = fixture_model<float>("stage1_padded");
    auto opt = make_adamw(m);
    stage1_state<float> st;
    fixed_sampler neg({2, 0, 1}, {2, 0, 1});
    one_step(m, st, fixture_batch<float>("stage1_padded"), neg);
    opt.step(m.parameters(), m.gradients(), 1e-3);
    save_training_checkpoint(saved, m, opt, 1, rng_state{5, 1});
  }
  // Loading `path` into `m` must throw E naming the file and `what`, and leave m and its optimiser untouched.
  auto refused = [&]<class E>(const fs::path& path, qformer_model<float>& m, const std::vector<std::string>& what) {
    auto opt = make_adamw(m);
    const std::vector<float> before(m.parameters().begin(), m.parameters().end());
    const auto msg = message_of<E>([&] { load_training_checkpoint(path, m, opt); });
    INFO(msg);
    CHECK(has(msg, path.string()));
    for (const auto& w : what) {
      CAPTURE(w);
      CHECK(has(msg, w));
    }
    CHECK(std::memcmp(before.data(), m.parameters().data(), before.size() * sizeof(float)) == 0);
    CHECK(opt.step_count() == 0);
  };

  SUBCASE("another configuration: each differing key named with both values") {
    auto other = fixture_model<float>("stage1_imageids");
    refused.template operator()<format_error>(saved, other,
                                              {"another configuration", "hidden_size is 24 in the file but 32 in the model",
                                               "num_hidden_layers is 3 in the file but 2 in the model",
                                               "dec_token_id is 36 in the file but 2 in the model"});
  }
  SUBCASE("the same sizes without the stage-1 heads") {
    auto mc = fixture_config("stage1_padded");
    mc.with_stage1_heads = false;
    qformer_model<float> plain(mc);
    refused.template operator()<format_error>(saved, plain, {"with_stage1_heads is 1 in the file but 0 in the model"});
  }
  SUBCASE("other dropout rates are the same architecture: the load succeeds") {
    auto m = fixture_model<float>("stage1_padded", 0.1);
    auto opt = make_adamw(m);
    const auto st = load_training_checkpoint(saved, m, opt);
    CHECK(st.step == 1);
    CHECK(st.rng == rng_state{5, 1});
    CHECK(opt.step_count() == 1);
  }
  SUBCASE("corrupted or truncated files: format_error naming the file") {
    const auto bytes = read_file(saved);
    REQUIRE(bytes.size() > 1000);
    struct bad_file {
      std::string name;
      std::vector<char> bytes;
    };
    std::vector<bad_file> cases;
    cases.push_back({"truncated_half.safetensors", {bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2)}});
    cases.push_back({"truncated_last_byte.safetensors", {bytes.begin(), bytes.end() - 1}});
    cases.push_back({"truncated_in_header.safetensors", {bytes.begin(), bytes.begin() + 20}});
    cases.push_back({"empty.safetensors", {}});
    auto garbage_header = bytes;
    garbage_header[8] = 'X';  // the header's opening '{'
    cases.push_back({"garbage_header.safetensors", garbage_header});
    auto huge_length = bytes;
    huge_length[7] = 0x7f;  // the little-endian header length, now about 2^63
    cases.push_back({"huge_length.safetensors", huge_length});
    for (const auto& c : cases) {
      CAPTURE(c.name);
      const fs::path p = tmp() / c.name;
      write_file(p, c.bytes);
      auto m = fixture_model<float>("stage1_padded");
      refused.template operator()<format_error>(p, m, {});
    }
    auto m = fixture_model<float>("stage1_padded");
    refused.template operator()<format_error>(tmp() / "no_such_file.safetensors", m, {"cannot open"});
  }
}

// ---------------------------------------------------------------------------------------------------------
namespace {

constexpr std::uint64_t run_seed = 20240607;
const warmup_cosine_schedule resume_schedule{
    .base_lr = 2e-3, .min_lr = 2e-4, .warmup_start_lr = 1e-4, .warmup_steps = 2, .total_steps = 6};
constexpr index_t resume_batch = 6;

std::uint64_t derive(std::uint64_t seed, std::uint64_t counter) {
  const auto r = random_bits(seed, counter);
  return (static_cast<std::uint64_t>(r[0]) << 32) | r[1];
}

// Steps [from, to) of the real stage-1 step: the batch and the step seed (dropout, negatives) of step k
// from the run's RNG state (seed, counter = k); clip to norm 1; AdamW at the schedule's lr. Returns the
// losses of the last step. A fresh stage1_state and sampler per call: nothing in them carries over.
stage1_losses train(qformer_model<float>& m, adamw<float>& opt, std::int64_t from, std::int64_t to, rng_state& rng) {
  reference_backend be;
  stage1_state<float> st;
  blip2_sampler sampler;
  stage1_losses last;
  for (std::int64_t step = from; step < to; ++step) {
    REQUIRE(rng.counter == static_cast<std::uint64_t>(step));
    const auto batch = synthetic_batch(resume_batch, derive(rng.seed, 2 * rng.counter));
    stage1_options so;
    so.seed = derive(rng.seed, 2 * rng.counter + 1);
    ++rng.counter;
    m.zero_grad();
    last = stage1_step(be, m, st, batch.view(), sampler, so);
    REQUIRE(std::isfinite(last.total));
    const double norm = clip_grad_norm(m.gradients(), 1.0);
    REQUIRE(std::isfinite(norm));
    opt.step(m.parameters(), m.gradients(), resume_schedule(step));
  }
  return last;
}

}  // namespace

TEST_CASE("stage-1 resume: 3 steps + checkpoint + 3 steps is bitwise 6 steps (sampled negatives, dropout 0.1)") {
  const double dropout = 0.1;
  const fs::path path = tmp() / "resume.safetensors";

  // dropout is on: the same batch with two step seeds gives two ITG losses (ITG does not depend on the
  // negatives, only on the dropout masks)
  {
    auto m = fixture_model<float>("stage1_padded", dropout);
    REQUIRE(m.config().qformer.hidden_dropout_prob == dropout);
    const auto b = synthetic_batch(resume_batch, 1);
    stage1_state<float> st;
    blip2_sampler s;
    stage1_options o1, o2;
    o1.seed = 1;
    o2.seed = 2;
    const double a = one_step(m, st, b, s, o1).itg, c = one_step(m, st, b, s, o2).itg;
    CHECK(a != c);
  }

  // uninterrupted
  auto a = fixture_model<float>("stage1_padded", dropout);
  auto oa = make_adamw(a);
  rng_state ra{run_seed, 0};
  const auto la = train(a, oa, 0, 6, ra);

  // interrupted after 3 steps, saved atomically
  rng_state rb{run_seed, 0};
  {
    auto b = fixture_model<float>("stage1_padded", dropout);
    auto ob = make_adamw(b);
    train(b, ob, 0, 3, rb);
    save_training_checkpoint(path, b, ob, 3, rb);
  }
  CHECK(fs::exists(path));
  for (const auto& e : fs::directory_iterator(tmp()))  // the atomic writer leaves no temporary behind
    CHECK(e.path().extension() == ".safetensors");

  // a fresh model (other parameters) and optimiser, as in a new process
  qformer_model<float> c(fixture_config("stage1_padded", dropout));
  {
    auto p = c.parameters();
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<float>(uniform_double(99, i) - 0.5);
  }
  auto oc = make_adamw(c);
  const auto st = load_training_checkpoint(path, c, oc);
  CHECK(st.step == 3);
  CHECK(st.rng == rb);
  CHECK(oc.step_count() == 3);
  rng_state rc = st.rng;
  const auto lc = train(c, oc, st.step, 6, rc);

  CHECK(bitwise_equal(a.parameters(), c.parameters()));
  CHECK(bitwise_equal(oa.exp_avg(), oc.exp_avg()));
  CHECK(bitwise_equal(oa.exp_avg_sq(), oc.exp_avg_sq()));
  CHECK(oa.step_count() == oc.step_count());
  CHECK(ra == rc);
  // the step-6 losses, bitwise
  CHECK(std::memcmp(&la.itc, &lc.itc, sizeof(double)) == 0);
  CHECK(std::memcmp(&la.itm, &lc.itm, sizeof(double)) == 0);
  CHECK(std::memcmp(&la.itg, &lc.itg, sizeof(double)) == 0);
  CHECK(std::memcmp(&la.total, &lc.total, sizeof(double)) == 0);
  MESSAGE("step-6 losses: itc ", la.itc, ", itm ", la.itm, ", itg ", la.itg);

  // not vacuous: the run moved the parameters, and the checkpoint did not simply hold the final state
  auto init = fixture_model<float>("stage1_padded", dropout);
  CHECK(!bitwise_equal(a.parameters(), init.parameters()));
  auto mid = fixture_model<float>("stage1_padded", dropout);
  auto omid = make_adamw(mid);
  load_training_checkpoint(path, mid, omid);
  CHECK(!bitwise_equal(a.parameters(), mid.parameters()));
}
