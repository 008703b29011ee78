// stage1_step_cli: the examples/stage1_step program, run as a user would run it.
//
// It runs the built binary (BLIP2_STAGE1_STEP_EXE) through std::system:
//   - on both stage-1 PyTorch fixtures (tests/fixtures/make_stage1_fixtures.py: given negatives) and on
//     every backend the build has: loss_itc, loss_itm, loss_itg and every grad.<name> equal
//     expected.safetensors within 1e-4 of max(the tensor's largest magnitude, 1) (the float32 bound of
//     stage1_golden), and OUT holds exactly those tensors;
//   - with the negatives left out (sampled by blip2_sampler with --seed) on a batch of 12 pairs: the same
//     seed twice writes the same bytes (reference backend, also with 1 and 3 OpenMP threads); the sampled step equals the library's stage1_step with
//     blip2_sampler and that seed; other seeds change loss_itm. Two seeds draw all 24 negatives alike
//     with probability prod over the draws of sum_j w_j^2 (w: the sampler's weights); the test computes
//     that bound from the model's ITC similarities and requires it below 1e-6, so a coincidence is
//     negligible and a failure means the seed is ignored;
//   - the failures: a model without the stage-1 heads, inputs without input_ids, one negative tensor
//     without the other, a "negative" that is the positive, a batch of one pair with sampled negatives
//     (exit 1 with a message naming what is wrong, no output written), and the usage errors (exit 2).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/train/stage1_step.hpp"
#include "harness/cli_checks.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"
#include "harness/stage1_batch.hpp"

using namespace blip2;
using namespace blip2::testing;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;
const std::string exe = BLIP2_STAGE1_STEP_EXE;

using result = program_result;

// Runs the program under test with `args`, stdout and stderr to files in `dir`.
result run(const temp_dir& dir, const std::vector<std::string>& args, const std::string& env = "") {
  return run_program(exe, dir, args, env);
}

std::vector<std::string> step_args(const fs::path& model, const fs::path& inputs, const fs::path& output,
                                   const std::string& backend = "reference") {
  return {"--model", model.string(), "--inputs", inputs.string(), "--output", output.string(), "--backend", backend};
}

// max |got - want| over the tensor, and max |want|
struct diff {
  double maxdiff = 0, maxref = 0;
  bool finite = true;
};
diff compare(const dynamic_tensor<double>& g, const dynamic_tensor<double>& w) {
  diff d;
  for (std::size_t k = 0; k < w.data.size(); ++k) {
    d.finite = d.finite && std::isfinite(g.data[k]);
    d.maxdiff = std::max(d.maxdiff, std::abs(g.data[k] - w.data[k]));
    d.maxref = std::max(d.maxref, std::abs(w.data[k]));
  }
  return d;
}

// One tensor of OUT against the reference file: same shape, F32, within tol * max(largest magnitude, 1).
void check_tensor(const safetensors_file& got, const safetensors_file& want, const std::string& name,
                  double tol = 1e-4) {
  INFO("tensor ", name);
  REQUIRE(got.contains(name));
  CHECK(got.info(name).dtype == safetensors_dtype::f32);
  REQUIRE(got.info(name).shape == want.info(name).shape);
  const auto d = compare(got.load_dynamic<double>(name), want.load_dynamic<double>(name));
  INFO("max diff ", d.maxdiff, ", largest magnitude ", d.maxref);
  CHECK(d.finite);
  CHECK(d.maxdiff <= tol * std::max(d.maxref, 1.0));
}

// Writes `names` of the fixture's inputs file (plus `extra`) to `path`.
void write_inputs(const fs::path& path, const std::string& fixture, const std::vector<std::string>& names,
                  std::vector<safetensors_entry> extra = {}) {
  copy_tensors(fixtures / fixture / "inputs.safetensors", path, names, std::move(extra));
}

safetensors_entry i64_entry(const std::string& name, std::vector<index_t> shape, const std::vector<std::int64_t>& v) {
  std::vector<std::byte> b(v.size() * sizeof(std::int64_t));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return {name, safetensors_dtype::i64, std::move(shape), std::move(b)};
}

// A batch of B pairs for the stage1_padded model (N = 5 tokens of E = 20, T = 6 of a vocabulary of 37):
// image embeddings uniform in [-1, 1), captions [CLS]=1 then ids in [3, 37), padded (id 0, mask 0) to T
// after 2 + b % 5 tokens. Everything from the counter-based RNG: the same on every machine.
using synthetic_batch = stage1_batch_data<float>;
synthetic_batch make_batch(index_t B, std::uint64_t seed) { return synthetic_stage1_batch(B, seed); }
void save_batch(const fs::path& path, const synthetic_batch& s) {
  std::vector<std::byte> img(s.image.size() * sizeof(float));
  std::memcpy(img.data(), s.image.data(), img.size());
  save_safetensors(path, {safetensors_entry("image_embeds", safetensors_dtype::f32, {s.B, s.N, s.E}, std::move(img)),
                          i64_entry("input_ids", {s.B, s.T}, s.ids), i64_entry("attention_mask", {s.B, s.T}, s.mask)});
}

std::vector<std::byte> file_bytes(const fs::path& p) {
  const std::string s = read_text(p);
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

}  // namespace

TEST_CASE("stage1_step: losses and every gradient equal the PyTorch fixture, on every backend") {
  for (const std::string fixture : {"stage1_padded", "stage1_imageids"})
    for (const auto& backend : built_backends()) {
      CAPTURE(fixture);
      CAPTURE(backend);
      temp_dir dir;
      const auto out = dir / "out.safetensors";
      const auto r = run(dir, step_args(fixtures / fixture, fixtures / fixture / "inputs.safetensors", out, backend));
      INFO(r.cmd, "\nstderr: ", r.err);
      REQUIRE(r.status == 0);
      CHECK(r.err.empty());
      CHECK(has(read_text(dir / "stdout.txt"), "negatives given"));
      const auto got = safetensors_file::open(out);
      const auto want = safetensors_file::open(fixtures / fixture / "expected.safetensors");
      std::set<std::string> expected_names = {"loss_itc", "loss_itm", "loss_itg"};
      for (const auto& name : want.names())
        if (name.rfind("grad.", 0) == 0 && name != "grad.image_embeds") expected_names.insert(name);
      const auto got_names = got.names();
      auto with_negatives = expected_names;
      with_negatives.insert({"itm_neg_image_idx", "itm_neg_text_idx"});
      CHECK(std::set<std::string>(got_names.begin(), got_names.end()) == with_negatives);  // exactly these
      CHECK(expected_names.size() > 30);
      for (const auto& name : {"loss_itc", "loss_itm", "loss_itg"}) CHECK(got.info(name).shape.empty());  // 0-d
      for (const auto& name : expected_names) check_tensor(got, want, name);
      // the negatives it used: the given ones
      const auto in = safetensors_file::open(fixtures / fixture / "inputs.safetensors");
      for (const auto& name : {"itm_neg_image_idx", "itm_neg_text_idx"})
        CHECK(got.load_dynamic<index_t>(name).data == in.load_dynamic<index_t>(name).data);
      // the atomic writer leaves no temporary behind
      CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 3);  // out + 2 logs
    }
}

TEST_CASE("stage1_step: sampled negatives are a deterministic function of the seed") {
  const index_t B = 12;
  const auto batch = make_batch(B, 2024);
  const fs::path model = fixtures / "stage1_padded";
  temp_dir dir;
  const auto in = dir / "in.safetensors";
  save_batch(in, batch);
  auto step = [&](std::uint64_t seed, const std::string& out, const std::string& backend = "reference",
                  const std::string& env = "") {
    auto args = step_args(model, in, dir / out, backend);
    args.push_back("--seed");
    args.push_back(std::to_string(seed));
    const auto r = run(dir, args, env);
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    CHECK(has(read_text(dir / "stdout.txt"), "negatives sampled"));
    return safetensors_file::open(dir / out);
  };

  // the library's step on the same batch with the same sampler and seed (float, reference backend)
  auto m = load_qformer<float>(model);
  REQUIRE(m.config().qformer.hidden_dropout_prob == 0.0);  // the seed acts through the negatives only
  stage1_batch<float> sb;
  sb.image_embeds = tensor_view<const float, 3>(batch.image.data(), {B, batch.N, batch.E});
  sb.input_ids = tensor_view<const index_t, 2>(batch.ids.data(), {B, batch.T});
  sb.attention_mask = tensor_view<const index_t, 2>(batch.mask.data(), {B, batch.T});
  stage1_state<float> st;
  stage1_options so;
  so.seed = 7;
  blip2_sampler sampler;
  reference_backend be;
  m.zero_grad();
  const auto losses = stage1_step(be, m, st, sb, sampler, so);

  // P(two seeds draw the same 2B negatives) = prod over the draws of sum_j w_j^2
  negative_sampling_inputs<float> si;
  si.sim_i2t = detail::as_const(st.itc.sim_i2t);
  si.sim_t2i = detail::as_const(st.itc.sim_t2i);
  double coincidence = 1;
  for (const auto d : {negative_direction::image_for_text, negative_direction::text_for_image}) {
    host_tensor<double, 2> w({B, B});
    blip2_sampler::weights(si, d, w.view());
    for (index_t b = 0; b < B; ++b) {
      double s2 = 0;
      for (index_t j = 0; j < B; ++j) s2 += w(b, j) * w(b, j);
      coincidence *= s2;
    }
  }
  MESSAGE("two seeds draw the same negatives with probability ", coincidence);
  REQUIRE(coincidence < 1e-6);

  const auto a = step(7, "a.safetensors");
  const auto b = step(7, "b.safetensors");
  CHECK(file_bytes(dir / "a.safetensors") == file_bytes(dir / "b.safetensors"));  // the same seed: the same bytes
  // on the reference backend, whatever the number of OpenMP threads
  step(7, "one_thread.safetensors", "reference", "OMP_NUM_THREADS=1");
  step(7, "three_threads.safetensors", "reference", "OMP_NUM_THREADS=3");
  CHECK(file_bytes(dir / "one_thread.safetensors") == file_bytes(dir / "a.safetensors"));
  CHECK(file_bytes(dir / "three_threads.safetensors") == file_bytes(dir / "a.safetensors"));

  // the program's step is the library's
  const double l[3] = {losses.itc, losses.itm, losses.itg};
  const char* lname[3] = {"loss_itc", "loss_itm", "loss_itg"};
  for (int k = 0; k < 3; ++k) {
    CAPTURE(lname[k]);
    CHECK(a.load_dynamic<double>(lname[k]).data[0] == doctest::Approx(l[k]).epsilon(1e-6));
  }
  for_each_parameter(m.config(), m.g, [&](const std::string& name, auto& g) {
    const auto got = a.load_dynamic<double>("grad." + name);
    REQUIRE(got.size() == g.size());
    double maxdiff = 0, maxref = 0;
    for (index_t k = 0; k < g.size(); ++k) {
      maxdiff = std::max(maxdiff, std::abs(got.data[static_cast<std::size_t>(k)] - static_cast<double>(g.data()[k])));
      maxref = std::max(maxref, std::abs(static_cast<double>(g.data()[k])));
    }
    INFO("grad.", name, ": max diff ", maxdiff, ", largest magnitude ", maxref);
    CHECK(maxdiff <= 1e-6 * std::max(maxref, 1.0));
  });

  // other seeds draw other negatives (a coincidence has probability < 1e-6 each, checked above), so ITM
  // sees other pairs; ITC and ITG do not depend on the negatives (no dropout in this model)
  const double itm7 = a.load_dynamic<double>("loss_itm").data[0];
  for (const std::uint64_t seed : {8u, 9u, 1234567u}) {
    CAPTURE(seed);
    const auto c = step(seed, "c" + std::to_string(seed) + ".safetensors");
    CHECK(c.load_dynamic<double>("loss_itm").data[0] != itm7);
    CHECK(c.load_dynamic<double>("loss_itc").data[0] == a.load_dynamic<double>("loss_itc").data[0]);
    CHECK(c.load_dynamic<double>("loss_itg").data[0] == a.load_dynamic<double>("loss_itg").data[0]);
    // and the ITM head's gradient with it
    CHECK(!std::ranges::equal(c.bytes("grad.itm_head.weight"), a.bytes("grad.itm_head.weight")));
  }

  // the oneDNN backend draws the same negatives from (nearly) the same similarities
  if (built_backends().size() > 1) {
    const auto o = step(7, "onednn.safetensors", "onednn");
    for (int k = 0; k < 3; ++k) {
      CAPTURE(lname[k]);
      CHECK(o.load_dynamic<double>(lname[k]).data[0] == doctest::Approx(l[k]).epsilon(1e-4));
    }
  }
}

TEST_CASE("stage1_step: usage errors exit 2 with the usage line") {
  temp_dir dir;
  const auto in = (fixtures / "stage1_padded" / "inputs.safetensors").string();
  const auto model = (fixtures / "stage1_padded").string();
  const auto out = (dir / "out.safetensors").string();
  const std::vector<usage_case> cases = {
      {{}, "missing --model"},
      {{"--model", model, "--output", out}, "missing --inputs"},
      {{"--model", model, "--inputs", in}, "missing --output"},
      {{"--model", model, "--inputs", in, "--output", out, "--seed"}, "--seed needs a value"},
      {{"--model", model, "--inputs", in, "--output", out, "--seed", "seven"}, "--seed 'seven' is not an integer"},
      {{"--model", model, "--inputs", in, "--output", out, "--seed", "-1"}, "--seed '-1' is not an integer"},
      {{"--model", model, "--inputs", in, "--output", out, "--backend", "cuda"}, "unknown backend 'cuda'"},
      {{"--model", model, "--inputs", in, "--output", out, "--lr", "1"}, "unknown argument '--lr'"},
  };
  check_usage_errors("stage1_step", exe, dir, cases);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("stage1_step: bad input exits 1 with a message naming what is wrong") {
  temp_dir dir;
  const std::string fixture = "stage1_padded";
  const fs::path model = fixtures / fixture;
  const auto good_in = fixtures / fixture / "inputs.safetensors";
  const auto out = dir / "out.safetensors";
  auto expect_failure = [&](const std::vector<std::string>& args, const std::vector<std::string>& says) {
    check_fails("stage1_step", exe, dir, args, says, out);
  };

  SUBCASE("a model without the stage-1 heads (Hugging Face retrieval heads only)") {
    // qformer_padded has the same encoder width (20) and the text side, but no cls.predictions.*
    expect_failure(step_args(fixtures / "qformer_padded", good_in, out),
                   {"qformer_padded", "model.safetensors", "no stage-1 heads",
                    "missing 'cls.predictions.transform.dense.weight'"});
  }
  SUBCASE("a model directory that does not exist") {
    const auto missing = dir / "no_such_model";
    expect_failure(step_args(missing, good_in, out), {missing.string(), "config.json"});
  }
  SUBCASE("inputs without input_ids") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "attention_mask"});
    expect_failure(step_args(model, dir / "in.safetensors", out), {"in.safetensors", "no tensor 'input_ids'"});
  }
  SUBCASE("inputs without image_embeds") {
    write_inputs(dir / "in.safetensors", fixture, {"input_ids", "attention_mask"});
    expect_failure(step_args(model, dir / "in.safetensors", out),
                   {"no tensor 'image_embeds'", "encoder_hidden_size = 20"});
  }
  SUBCASE("one negative tensor without the other") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "input_ids", "attention_mask", "itm_neg_image_idx"});
    expect_failure(step_args(model, dir / "in.safetensors", out),
                   {"'itm_neg_image_idx' but not 'itm_neg_text_idx'"});
  }
  SUBCASE("a given negative that is the pair itself") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "input_ids", "attention_mask", "itm_neg_image_idx"},
                 {i64_entry("itm_neg_text_idx", {3}, {2, 1, 0})});
    expect_failure(step_args(model, dir / "in.safetensors", out),
                   {"'itm_neg_text_idx'[1] = 1 is not a negative of pair 1"});
  }
  SUBCASE("a given negative outside the batch") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "input_ids", "attention_mask", "itm_neg_text_idx"},
                 {i64_entry("itm_neg_image_idx", {3}, {2, 3, 1})});
    expect_failure(step_args(model, dir / "in.safetensors", out), {"'itm_neg_image_idx'[1] = 3", "[0, B) with B = 3"});
  }
  SUBCASE("a negative with the same image id (stage1_imageids: pairs 0 and 2 show image 0)") {
    write_inputs(dir / "in.safetensors", "stage1_imageids",
                 {"image_embeds", "input_ids", "attention_mask", "image_ids", "itm_neg_image_idx"},
                 {i64_entry("itm_neg_text_idx", {4}, {2, 2, 1, 0})});
    expect_failure(step_args(fixtures / "stage1_imageids", dir / "in.safetensors", out),
                   {"'itm_neg_text_idx'[0] = 2", "same image id"});
  }
  SUBCASE("a batch of one pair: no negative to sample") {
    const auto one = make_batch(1, 3);
    save_batch(dir / "in.safetensors", one);
    expect_failure(step_args(model, dir / "in.safetensors", out), {"blip2_sampler", "a batch of one pair"});
  }
  SUBCASE("input_ids for another number of images") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds"}, {i64_entry("input_ids", {2, 6}, std::vector<std::int64_t>(12, 1))});
    expect_failure(step_args(model, dir / "in.safetensors", out), {"input_ids", "(2, 6)", "B = 3"});
  }
  SUBCASE("an id outside the vocabulary") {
    std::vector<std::int64_t> ids(3 * 6, 1);
    ids[1 * 6 + 4] = 37;
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds"}, {i64_entry("input_ids", {3, 6}, ids)});
    expect_failure(step_args(model, dir / "in.safetensors", out), {"input_ids(1, 4) = 37"});
  }
  SUBCASE("an output path in a directory that does not exist") {
    const auto r = run(dir, step_args(model, good_in, dir / "no_such_dir" / "out.safetensors"));
    INFO(r.cmd, "\nstderr: ", r.err);
    CHECK(r.status == 1);
    CHECK(has(r.err, "no_such_dir"));
    CHECK_FALSE(fs::exists(dir / "no_such_dir"));
  }
}

#ifdef BLIP2_MPIEXEC
// ---- under mpirun (blip2::mpi): W ranks, each on its shard of the batch, against one process ----
namespace {

// stage1_step under `mpirun -np W` (W = 1: without mpirun); Open MPI's settings come from the test's
// environment (tests/CMakeLists.txt).
result run_ranks(int W, const temp_dir& dir, const std::vector<std::string>& args) {
  if (W == 1) return run(dir, args);
  std::vector<std::string> full{"-np", std::to_string(W), exe};
  full.insert(full.end(), args.begin(), args.end());
  return run_program(BLIP2_MPIEXEC, dir, full, "OMP_NUM_THREADS=1");
}

// Every tensor of the W-rank output against the one-process output: losses and gradients within 1e-5
// relative to the tensor's largest element (or 1e-3 of the largest gradient: the attention key biases'
// gradients are 0 in exact arithmetic, rounding residue here; tests/test_data_parallel.cpp), negatives equal.
void check_same_output(const fs::path& got_path, const fs::path& want_path) {
  const auto got = safetensors_file::open(got_path), want = safetensors_file::open(want_path);
  const auto names = want.names();
  const auto got_names = got.names();
  CHECK(std::set<std::string>(got_names.begin(), got_names.end()) == std::set<std::string>(names.begin(), names.end()));
  double largest = 0;
  for (const auto& name : names)
    if (name.rfind("grad.", 0) == 0)
      for (double v : want.load_dynamic<double>(name).data) largest = std::max(largest, std::abs(v));
  for (const auto& name : names) {
    INFO("tensor ", name);
    if (name.rfind("itm_neg_", 0) == 0) {
      CHECK(got.load_dynamic<index_t>(name).data == want.load_dynamic<index_t>(name).data);
      continue;
    }
    const auto d = compare(got.load_dynamic<double>(name), want.load_dynamic<double>(name));
    INFO("max diff ", d.maxdiff, ", largest magnitude ", d.maxref);
    CHECK(d.finite);
    CHECK(d.maxdiff <= 1e-5 * std::max(d.maxref, 1e-3 * largest));
  }
}

}  // namespace

TEST_CASE("stage1_step under mpirun -np 2 and 4: the one-process output, given and sampled negatives") {
  temp_dir dir;
  // given negatives (the image-id fixture: ids shared by pairs, B = 4), and sampled ones (B = 8, no ids)
  const auto fixture = fixtures / "stage1_imageids";
  const auto sampled_in = dir / "sampled.safetensors";
  save_batch(sampled_in, make_batch(8, 77));
  for (const auto& [model, inputs] : {std::pair{fixture, fixture / "inputs.safetensors"},
                                      std::pair{fixtures / "stage1_padded", sampled_in}}) {
    CAPTURE(inputs);
    const auto one = dir / "one.safetensors";
    const auto r1 = run_ranks(1, dir, step_args(model, inputs, one));
    INFO(r1.cmd, "\nstderr: ", r1.err);
    REQUIRE(r1.status == 0);
    for (int W : {2, 4}) {
      CAPTURE(W);
      const auto out = dir / ("ranks" + std::to_string(W) + ".safetensors");
      const auto r = run_ranks(W, dir, step_args(model, inputs, out));
      INFO(r.cmd, "\nstderr: ", r.err);
      REQUIRE(r.status == 0);
      CHECK(has(read_text(dir / "stdout.txt"), "over " + std::to_string(W) + " rank(s)"));
      check_same_output(out, one);
    }
  }
}

TEST_CASE("stage1_step under mpirun: a batch the ranks cannot share is refused, naming B and W") {
  temp_dir dir;
  const auto out = dir / "out.safetensors";
  const auto r = run_ranks(2, dir, step_args(fixtures / "stage1_padded", fixtures / "stage1_padded" / "inputs.safetensors", out));
  INFO(r.cmd, "\nstderr: ", r.err);
  CHECK(r.status != 0);
  CHECK(has(r.err, "the batch has B = 3 pairs, which 2 ranks cannot share evenly"));
  CHECK_FALSE(fs::exists(out));
}
#endif
