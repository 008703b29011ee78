// qformer_features_cli: the examples/qformer_features program, run as a user would run it.
//
// It runs the built binary (BLIP2_QFORMER_FEATURES_EXE) through std::system on both PyTorch fixtures
// (tests/fixtures/make_qformer_fixtures.py) and on every backend the build has, and compares what it
// writes with expected.safetensors: every tensor within 1e-4 of its largest magnitude (the float32 bound
// of qformer_golden). Then the command line's failures: the exit status (2 for a usage error, 1 for bad
// input) and a stderr message that names what is wrong.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "blip2/io/safetensors.hpp"
#include "harness/cli_checks.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"

using namespace blip2;
using namespace blip2::testing;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;
const std::string exe = BLIP2_QFORMER_FEATURES_EXE;

using result = program_result;

// Runs the program under test with `args`, stdout and stderr to files in `dir`.
result run(const temp_dir& dir, const std::vector<std::string>& args) { return run_program(exe, dir, args); }

std::vector<std::string> model_args(const std::string& fixture, const fs::path& inputs, const fs::path& output,
                                    const std::string& backend = "reference") {
  return {"--model", (fixtures / fixture).string(), "--inputs", inputs.string(), "--output", output.string(),
          "--backend", backend};
}

// Compares one tensor of OUT with the fixture's: same shape, F32, within tol of the largest magnitude.
void check_tensor(const safetensors_file& got, const safetensors_file& want, const std::string& name,
                  double tol = 1e-4) {
  INFO("tensor ", name);
  REQUIRE(got.contains(name));
  CHECK(got.info(name).dtype == safetensors_dtype::f32);
  CHECK(got.info(name).shape == want.info(name).shape);
  const auto g = got.load_dynamic<double>(name), w = want.load_dynamic<double>(name);
  REQUIRE(g.data.size() == w.data.size());
  double maxdiff = 0, maxref = 0;
  bool finite = true;
  for (std::size_t k = 0; k < w.data.size(); ++k) {
    finite = finite && std::isfinite(g.data[k]);
    maxdiff = std::max(maxdiff, std::abs(g.data[k] - w.data[k]));
    maxref = std::max(maxref, std::abs(w.data[k]));
  }
  INFO("max diff ", maxdiff, ", largest magnitude ", maxref);
  CHECK(finite);
  CHECK(maxdiff <= tol * maxref);
}

// Writes `names` of the fixture's inputs file (plus `extra`) to `path`.
void write_inputs(const fs::path& path, const std::string& fixture, const std::vector<std::string>& names,
                  std::vector<safetensors_entry> extra = {}) {
  copy_tensors(fixtures / fixture / "inputs.safetensors", path, names, std::move(extra));
}

}  // namespace

TEST_CASE("qformer_features: every output equals the PyTorch fixture, on every backend") {
  const std::vector<std::string> outputs = {"query_output", "image_feats", "text_feat", "itc_scores", "itm_logits"};
  for (const std::string fixture : {"qformer_freq1", "qformer_padded"})
    for (const auto& backend : testing::device_program_backends()) {
      CAPTURE(fixture);
      CAPTURE(backend);
      temp_dir dir;
      const auto out = dir / "out.safetensors";
      const auto r = run(dir, model_args(fixture, fixtures / fixture / "inputs.safetensors", out, backend));
      INFO(r.cmd, "\nstderr: ", r.err);
      if (testing::no_gpu_here(backend, r)) {
        MESSAGE("--backend cuda skipped: no CUDA device here (the program says: " << r.err << ")");
        continue;
      }
      REQUIRE(r.status == 0);
      CHECK(r.err.empty());
      const auto got = safetensors_file::open(out);
      const auto want = safetensors_file::open(fixtures / fixture / "expected.safetensors");
      CHECK(got.size() == outputs.size());  // exactly these tensors
      for (const auto& name : outputs) check_tensor(got, want, name);
      // the atomic writer leaves no temporary behind
      CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 3);  // out + 2 logs
    }
}

TEST_CASE("qformer_features: image_embeds alone gives the image outputs only") {
  for (const auto& backend : built_backends()) {
    CAPTURE(backend);
    temp_dir dir;
    write_inputs(dir / "in.safetensors", "qformer_padded", {"image_embeds"});
    const auto r = run(dir, model_args("qformer_padded", dir / "in.safetensors", dir / "out.safetensors", backend));
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    const auto got = safetensors_file::open(dir / "out.safetensors");
    const auto want = safetensors_file::open(fixtures / "qformer_padded" / "expected.safetensors");
    CHECK(got.size() == 2);  // query_output and image_feats, nothing of the text side
    check_tensor(got, want, "query_output");
    check_tensor(got, want, "image_feats");
  }
}

TEST_CASE("qformer_features: no attention_mask means all ones") {
  temp_dir dir;
  const auto in = safetensors_file::open(fixtures / "qformer_padded" / "inputs.safetensors");
  const auto shape = in.info("input_ids").shape;
  const std::vector<std::int64_t> ones(static_cast<std::size_t>(shape[0] * shape[1]), 1);
  write_inputs(dir / "ones.safetensors", "qformer_padded", {"image_embeds", "input_ids"},
               {safetensors_entry("attention_mask", safetensors_dtype::i64, shape,
                                  std::as_bytes(std::span<const std::int64_t>(ones)))});
  write_inputs(dir / "nomask.safetensors", "qformer_padded", {"image_embeds", "input_ids"});
  REQUIRE(run(dir, model_args("qformer_padded", dir / "ones.safetensors", dir / "a.safetensors")).status == 0);
  REQUIRE(run(dir, model_args("qformer_padded", dir / "nomask.safetensors", dir / "b.safetensors")).status == 0);
  const auto a = safetensors_file::open(dir / "a.safetensors"), b = safetensors_file::open(dir / "b.safetensors");
  REQUIRE(a.names() == b.names());
  CHECK(a.size() == 5);
  for (const auto& name : a.names()) {
    CAPTURE(name);
    CHECK(std::ranges::equal(a.bytes(name), b.bytes(name)));
  }
}

TEST_CASE("qformer_features: usage errors exit 2 with the usage line") {
  temp_dir dir;
  const auto in = (fixtures / "qformer_padded" / "inputs.safetensors").string();
  const auto model = (fixtures / "qformer_padded").string();
  const auto out = (dir / "out.safetensors").string();
  const std::vector<usage_case> cases = {
      {{}, "missing --model"},
      {{"--inputs", in, "--output", out}, "missing --model"},
      {{"--model", model, "--output", out}, "missing --inputs"},
      {{"--model", model, "--inputs", in}, "missing --output"},
      {{"--model", model, "--inputs", in, "--output"}, "--output needs a value"},
      {{"--model", model, "--inputs", in, "--output", out, "--backend", "tpu"}, "unknown backend 'tpu'"},
#if !BLIP2_TEST_CUDA_PART
      {{"--model", model, "--inputs", in, "--output", out, "--backend", "cuda"}, "this build has no CUDA backend"},
#endif
      {{"--model", model, "--inputs", in, "--output", out, "--frobnicate"}, "unknown argument '--frobnicate'"},
  };
  check_usage_errors("qformer_features", exe, dir, cases);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("qformer_features: bad input exits 1 with a message naming what is wrong") {
  temp_dir dir;
  const std::string fixture = "qformer_padded";
  const auto good_in = fixtures / fixture / "inputs.safetensors";
  const auto out = dir / "out.safetensors";
  auto expect_failure = [&](const std::vector<std::string>& args, const std::vector<std::string>& says) {
    check_fails("qformer_features", exe, dir, args, says, out);
  };

  SUBCASE("a model directory that does not exist") {
    const auto missing = (dir / "no_such_model").string();
    expect_failure({"--model", missing, "--inputs", good_in.string(), "--output", out.string()},
                   {missing, "config.json", "no such file"});
  }
  SUBCASE("a model directory without model.safetensors") {
    fs::create_directories(dir / "model");
    fs::copy_file(fixtures / fixture / "config.json", dir / "model" / "config.json");
    expect_failure({"--model", (dir / "model").string(), "--inputs", good_in.string(), "--output", out.string()},
                   {"model.safetensors", "cannot open"});
  }
  SUBCASE("an inputs file that does not exist") {
    const auto missing = (dir / "nothing.safetensors").string();
    expect_failure(model_args(fixture, missing, out), {missing, "cannot open"});
  }
  SUBCASE("an inputs file that is not safetensors") {
    std::ofstream(dir / "junk.safetensors") << "this is not a safetensors file at all";
    expect_failure(model_args(fixture, dir / "junk.safetensors", out), {"junk.safetensors", "header length"});
  }
  SUBCASE("an inputs file without image_embeds") {
    write_inputs(dir / "in.safetensors", fixture, {"input_ids", "attention_mask"});
    expect_failure(model_args(fixture, dir / "in.safetensors", out),
                   {"in.safetensors", "no tensor 'image_embeds'", "encoder_hidden_size = 20"});
  }
  SUBCASE("image_embeds of the wrong width") {
    const std::vector<float> img(3 * 5 * 21, 0.5f);
    save_safetensors(dir / "in.safetensors",
                     {safetensors_entry("image_embeds", safetensors_dtype::f32, {3, 5, 21},
                                        std::as_bytes(std::span<const float>(img)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out),
                   {"image_embeds", "(3, 5, 21)", "encoder_hidden_size = 20"});
  }
  SUBCASE("image_embeds of the wrong rank") {
    const std::vector<float> img(5 * 20, 0.5f);
    save_safetensors(dir / "in.safetensors", {safetensors_entry("image_embeds", safetensors_dtype::f32, {5, 20},
                                                                std::as_bytes(std::span<const float>(img)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"image_embeds", "(5, 20)", "(B, N, E)"});
  }
  SUBCASE("image_embeds with no images") {
    save_safetensors(dir / "in.safetensors",
                     {safetensors_entry("image_embeds", safetensors_dtype::f32, {0, 5, 20}, std::span<const std::byte>())});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"image_embeds", "(0, 5, 20)", "B >= 1"});
  }
  SUBCASE("image_embeds of an integer dtype") {
    const std::vector<std::int64_t> img(3 * 5 * 20, 1);
    save_safetensors(dir / "in.safetensors", {safetensors_entry("image_embeds", safetensors_dtype::i64, {3, 5, 20},
                                                                std::as_bytes(std::span<const std::int64_t>(img)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"image_embeds", "I64"});
  }
  SUBCASE("input_ids for another number of images") {
    const std::vector<std::int64_t> ids(2 * 6, 1);
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds"},
                 {safetensors_entry("input_ids", safetensors_dtype::i64, {2, 6},
                                    std::as_bytes(std::span<const std::int64_t>(ids)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"input_ids", "(2, 6)", "B = 3"});
  }
  SUBCASE("an id outside the vocabulary") {
    std::vector<std::int64_t> ids(3 * 6, 1);
    ids[1 * 6 + 4] = 37;  // text 1, position 4; the vocabulary has 37 entries
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds"},
                 {safetensors_entry("input_ids", safetensors_dtype::i64, {3, 6},
                                    std::as_bytes(std::span<const std::int64_t>(ids)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"input_ids(1, 4) = 37", "37"});
  }
  SUBCASE("an attention_mask value of 2") {
    std::vector<std::int64_t> mask(3 * 6, 1);
    mask[2 * 6 + 1] = 2;
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "input_ids"},
                 {safetensors_entry("attention_mask", safetensors_dtype::i64, {3, 6},
                                    std::as_bytes(std::span<const std::int64_t>(mask)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"attention_mask(2, 1) = 2", "0 or 1"});
  }
  SUBCASE("an attention_mask of another shape than input_ids") {
    const std::vector<std::int64_t> mask(3 * 5, 1);
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "input_ids"},
                 {safetensors_entry("attention_mask", safetensors_dtype::i64, {3, 5},
                                    std::as_bytes(std::span<const std::int64_t>(mask)))});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"attention_mask", "(3, 5)", "(3, 6)"});
  }
  SUBCASE("an attention_mask without input_ids") {
    write_inputs(dir / "in.safetensors", fixture, {"image_embeds", "attention_mask"});
    expect_failure(model_args(fixture, dir / "in.safetensors", out), {"attention_mask but no input_ids"});
  }
  SUBCASE("an output path in a directory that does not exist") {
    const auto r = run(dir, model_args(fixture, good_in, dir / "no_such_dir" / "out.safetensors"));
    INFO(r.cmd, "\nstderr: ", r.err);
    CHECK(r.status == 1);
    CHECK(has(r.err, "no_such_dir"));
    CHECK_FALSE(fs::exists(dir / "no_such_dir"));
  }
}
