// vision_features_cli: the vision_features example run as a program on the tiny ViT fixture
// (tests/fixtures/vision_tiny: a 16 x 16 PNG, the weights, and PyTorch's outputs for that PNG).
//
// At --size 16 the resize is the identity, so pixel_values must equal the fixture's (byte / 255 - mean) /
// std up to float32 rounding: the tool computes it in float, the fixture in double rounded to float, so
// they may differ by a couple of float32 ulps of values below 3 (bound 1e-6). image_embeds must match
// PyTorch within 1e-4 of the largest magnitude (the golden test's float32 bound, see test_vision_golden.cpp).
// At another size the resize belongs to blip2::image (tested against Pillow elsewhere): here the tool's
// image_embeds must be what the library computes from the tool's own pixel_values (the same backend, the
// same code: bit for bit).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "harness/run_program.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;
using blip2::testing::built_backends;
using blip2::testing::run_program;
using blip2::testing::temp_dir;

namespace {

const std::filesystem::path fixture = std::filesystem::path(BLIP2_FIXTURE_DIR) / "vision_tiny";
const std::string exe = BLIP2_VISION_FEATURES_EXE;

double max_abs_diff(const dynamic_tensor<double>& a, const dynamic_tensor<double>& b) {
  REQUIRE(a.shape == b.shape);
  double d = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) d = std::max(d, std::abs(a.data[i] - b.data[i]));
  return d;
}
double max_abs(const dynamic_tensor<double>& a) {
  double m = 0;
  for (double x : a.data) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

TEST_CASE("vision_features: the PNG at the model's size matches PyTorch, on every backend") {
  const auto cases = safetensors_file::open(fixture / "cases.safetensors");
  const auto want_px = cases.load_dynamic<double>("pixel_values_png");
  const auto want = cases.load_dynamic<double>("image_embeds_png");
  for (const std::string& backend : testing::device_program_backends()) {
    CAPTURE(backend);
    temp_dir dir;
    const auto out = dir / "out.safetensors";
    const auto r = run_program(exe, dir, {"--model", fixture.string(), "--image", (fixture / "image.png").string(),
                                          "--size", "16", "--backend", backend, "--output", out.string()});
    INFO(r.cmd, "\n", r.err);
    if (testing::no_gpu_here(backend, r)) {
      MESSAGE("--backend cuda skipped: no CUDA device here (the program says: " << r.err << ")");
      CHECK_FALSE(std::filesystem::exists(out));
      continue;
    }
    REQUIRE(r.status == 0);
    const auto got = safetensors_file::open(out);
    const auto px = got.load_dynamic<double>("pixel_values");
    CHECK(px.shape == std::vector<index_t>{1, 3, 16, 16});
    CHECK(max_abs_diff(px, want_px) <= 1e-6);  // float vs double-then-rounded normalisation
    const auto emb = got.load_dynamic<double>("image_embeds");
    CHECK(emb.shape == std::vector<index_t>{1, 17, 32});
    CHECK(max_abs_diff(emb, want) <= 1e-4 * max_abs(want));  // the golden test's float32 bound
  }
  // without --size: the checkpoint's image_size (16)
  temp_dir dir;
  const auto r = run_program(exe, dir, {"--model", fixture.string(), "--image", (fixture / "image.png").string(),
                                        "--output", (dir / "o.safetensors").string()});
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(safetensors_file::open(dir / "o.safetensors").info("image_embeds").shape == std::vector<index_t>{1, 17, 32});
}

TEST_CASE("vision_features: another size interpolates the position embeddings") {
  temp_dir dir;
  const auto out = dir / "out.safetensors";
  const auto r = run_program(exe, dir, {"--model", fixture.string(), "--image", (fixture / "image.png").string(),
                                        "--size", "24", "--backend", "reference", "--output", out.string()});
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto got = safetensors_file::open(out);
  auto px = got.load_dynamic<float>("pixel_values");
  REQUIRE(px.shape == std::vector<index_t>{1, 3, 24, 24});
  const auto emb = got.load_dynamic<float>("image_embeds");
  REQUIRE(emb.shape == std::vector<index_t>{1, 37, 32});
  reference_backend ref;
  const auto m = load_vision_model<float>(fixture);
  const auto again = vision_forward(ref, m, tensor_view<const float, 4>(px.data.data(), {1, 3, 24, 24}));
  CHECK(std::memcmp(again.data(), emb.data.data(), emb.data.size() * sizeof(float)) == 0);
}

TEST_CASE("vision_features: bad input gives a message and a status, never a crash") {
  temp_dir dir;
  const std::string model = fixture.string(), image = (fixture / "image.png").string();
  const std::string out = (dir / "out.safetensors").string();
  auto expect = [&](const std::vector<std::string>& args, int status, const std::string& text) {
    const auto r = run_program(exe, dir, args);
    INFO(r.cmd, "\n", r.err);
    CHECK(r.status == status);
    CHECK(r.err.find(text) != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(out));
  };
  expect({"--image", image, "--output", out}, 2, "missing --model DIR");
  expect({"--model", model, "--image", image, "--output", out, "--size", "0"}, 2, "is not an image size");
  expect({"--model", model, "--image", image, "--output", out, "--backend", "tpu"}, 2, "unknown backend 'tpu'");
#if !BLIP2_TEST_CUDA_PART
  expect({"--model", model, "--image", image, "--output", out, "--backend", "cuda"}, 2, "this build has no CUDA backend");
#endif
  expect({"--model", model, "--image", image, "--output", out, "--size", "18"}, 1,
         "--size 18 is not a multiple of the model's patch size 4");
  expect({"--model", model, "--image", (dir / "nothing.png").string(), "--output", out}, 1, "nothing.png");
  expect({"--model", model, "--image", (fixture / "config.json").string(), "--output", out}, 1, "config.json");
  expect({"--model", (dir / "no_model").string(), "--image", image, "--output", out}, 1, "no_model");
#if BLIP2_HAS_ONEDNN
  // bfloat16: this CPU (AVX2) has no oneDNN bf16 matmul, and the path is not implemented anyway
  expect({"--model", model, "--image", image, "--output", out, "--bf16"}, 1, "bfloat16");
#else
  // without oneDNN the default backend is the reference, which has no bf16 path
  expect({"--model", model, "--image", image, "--output", out, "--bf16"}, 2, "--bf16 needs --backend onednn");
#endif
}
