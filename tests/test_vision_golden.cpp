// vision_transformer_golden: the frozen image encoder (models/vit/vision_transformer.hpp) against PyTorch
// fixtures (tests/fixtures/make_vision_fixtures.py: a tiny EVA-style ViT, E=32 F=64 NH=4 L=2 P=4, trained
// size 16), at the checkpoint's image size and at three others whose position grid is interpolated
// bicubically (24: up, 8: down, 12 x 20: not square), on the reference backend (float and double) and
// the oneDNN backend (float); then the errors a user meets: a missing tensor, a tensor of another shape,
// an image size not divisible by the patch, an inconsistent vision_config, a file with more layers than
// the config; and what asking for bfloat16 weights does on this CPU.
//
// Tolerances (max |got - want| over a tensor, relative to its largest magnitude):
//   float32 1e-4: the issue's bound. The outputs leave a LayerNorm (O(1) values); on the way they pass two
//     layers of ~10 dependent float32 operations each, with sums over at most 64 terms, each rounding at
//     6e-8 relative, and LayerNorm divides by a standard deviation that can amplify absolute errors of
//     its input by a few; we measure 4e-7 (printed below), so 1e-4 is a loose bound that still catches any
//     wrong formula (those give errors of order 1).
//   double 2e-6: the fixtures are float64 results rounded to float32 (6e-8 relative per element), and
//     the inputs and weights are exactly the float32 values PyTorch used; the bound leaves room for
//     the float32 rounding of the fixture, which is all that should remain.
//   position embeddings: double 1e-6, float 1e-6 (computed in double either way, then rounded to T; the
//     fixture's float32 rounding is 6e-8 relative).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/models/vit/bf16.hpp"
#endif
#if BLIP2_HAS_CUDA
#include "blip2/backend/cuda/cuda.hpp"
#endif
#include "harness/expect_error.hpp"
#include "harness/on_backend.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;

using blip2::testing::has;
using blip2::testing::message_of;

namespace {

const std::filesystem::path fixture = std::filesystem::path(BLIP2_FIXTURE_DIR) / "vision_tiny";

template <class T>
double relative_error(const std::string& name, const T* got, const dynamic_tensor<double>& want) {
  double maxdiff = 0, maxref = 0;
  bool finite = true;
  for (index_t k = 0; k < want.size(); ++k) {
    const double g = static_cast<double>(got[k]), w = want.data[static_cast<std::size_t>(k)];
    finite = finite && std::isfinite(g);
    maxdiff = std::max(maxdiff, std::abs(g - w));
    maxref = std::max(maxref, std::abs(w));
  }
  INFO(name, ": max diff ", maxdiff, ", largest magnitude ", maxref);
  CHECK(finite);
  CHECK(maxref > 0.5);  // the fixture is not degenerate
  return maxdiff / maxref;
}

const char* const cases[] = {"16", "24", "8", "12x20", "png"};

template <class T, class Be>
double run_cases(Be& be, double tol, index_t max_chunk = 8) {
  testing::on_backend<Be> d(be);
  const auto m = d.model(load_vision_model<T>(fixture));  // pixels stay on the host: vision_forward copies them
  const auto file = safetensors_file::open(fixture / "cases.safetensors");
  double worst = 0;
  for (const char* c : cases) {
    const std::string name = c;
    auto px = file.load_dynamic<T>("pixel_values_" + name);
    const auto want = file.load_dynamic<double>("image_embeds_" + name);
    const tensor_view<const T, 4> pixels(px.data.data(), {px.shape[0], px.shape[1], px.shape[2], px.shape[3]});
    const auto got = vision_forward(be, m, pixels, max_chunk);
    REQUIRE(got.extent(0) == want.shape[0]);
    REQUIRE(got.extent(1) == want.shape[1]);
    REQUIRE(got.extent(2) == want.shape[2]);
    const double err = relative_error("image_embeds_" + name, got.data(), want);
    CHECK_MESSAGE(err <= tol, "image_embeds_", name, ": relative error ", err, " > ", tol);
    worst = std::max(worst, err);
  }
  return worst;
}

// Every tensor of a safetensors file as owned entries (F32), so a test can drop or replace one.
std::vector<safetensors_entry> entries_of(const safetensors_file& f) {
  std::vector<safetensors_entry> out;
  for (const auto& t : f.tensors()) {
    const auto d = f.load_dynamic<float>(t.name);
    std::vector<std::byte> bytes(d.data.size() * sizeof(float));
    std::memcpy(bytes.data(), d.data.data(), bytes.size());
    out.emplace_back(t.name, safetensors_dtype::f32, d.shape, std::move(bytes));
  }
  return out;
}

// A checkpoint directory: the fixture's config.json (or `config`), and its weights after `edit`.
template <class Edit>
void write_checkpoint(const testing::temp_dir& dir, Edit&& edit, const std::string& config = "") {
  auto entries = entries_of(safetensors_file::open(fixture / "model.safetensors"));
  edit(entries);
  save_safetensors(dir / "model.safetensors", entries);
  if (config.empty())
    std::filesystem::copy_file(fixture / "config.json", dir / "config.json");
  else
    std::ofstream(dir / "config.json") << config;
}

}  // namespace

TEST_CASE("vision_config is read from config.json, with EVA ViT-g/14 defaults") {
  const auto c = load_vision_config(fixture / "config.json");
  CHECK(c.hidden_size == 32);
  CHECK(c.intermediate_size == 64);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.patch_size == 4);
  CHECK(c.image_size == 16);
  CHECK(c.layer_norm_eps == 1e-6);
  CHECK(c.qkv_bias);
  const auto d = parse_blip2_config(nlohmann::json::parse(R"({"model_type": "blip-2"})")).vision;
  CHECK(d.hidden_size == 1408);
  CHECK(d.intermediate_size == 6144);
  CHECK(d.num_attention_heads == 16);
  CHECK(d.num_hidden_layers == 39);
  CHECK(d.patch_size == 14);
  CHECK(d.image_size == 224);
  CHECK(d.layer_norm_eps == 1e-6);
  CHECK(d.hidden_act == "gelu");
  CHECK(d.num_positions() == 257);
  CHECK(d.head_size() == 88);
  // ViT-g/14: 39 layers of 25,250,176 (LN 2816, qkv 5,947,392 + 4224, projection 1,982,464 + 1408,
  // LN 2816, fc1 8,650,752 + 6144, fc2 8,650,752 + 1408), embeddings 1,192,576 (class 1408, patch
  // 827,904 + 1408, positions 361,856), post_layernorm 2816
  CHECK(vision_parameter_count(d) == 985'952'256);
}

TEST_CASE("vision_transformer_golden: reference backend, double and float") {
  reference_backend ref;
  const double err_double = run_cases<double>(ref, 2e-6);
  const double err_float = run_cases<float>(ref, 1e-4);
  std::printf("vision golden, reference: largest relative error double %.2e, float %.2e\n", err_double, err_float);
}

#if BLIP2_HAS_ONEDNN
TEST_CASE("vision_transformer_golden: oneDNN backend, float") {
  onednn_backend be;
  const double err = run_cases<float>(be, 1e-4);
  std::printf("vision golden, onednn float: largest relative error %.2e\n", err);
}
#endif

#if BLIP2_HAS_CUDA
TEST_CASE("vision_transformer_golden: CUDA backend, float (weights and activations in device memory)") {
  std::string why;
  if (!cuda_available(&why)) {
    MESSAGE("skipped: no CUDA device (" << why << ")");
    return;
  }
  cuda_backend be;
  const double err = run_cases<float>(be, 1e-4);
  std::printf("vision golden, cuda float: largest relative error %.2e\n", err);
}
#endif

TEST_CASE("vision_transformer_golden: one image at a time gives the same result as a batch") {
  reference_backend ref;
  const auto m = load_vision_model<float>(fixture);
  auto px = safetensors_file::open(fixture / "cases.safetensors").load_dynamic<float>("pixel_values_16");
  const tensor_view<const float, 4> pixels(px.data.data(), {2, 3, 16, 16});
  const auto batch = vision_forward(ref, m, pixels, 8);
  const auto single = vision_forward(ref, m, pixels, 1);
  // the reference computes every row alone, so chunking changes nothing, bit for bit
  CHECK(std::memcmp(batch.data(), single.data(), sizeof(float) * static_cast<std::size_t>(batch.size())) == 0);
  // one state reused for another size, then the first again (buffers and position table are rebuilt)
#if BLIP2_HAS_ONEDNN
  onednn_backend be;
#else
  reference_backend& be = ref;  // a build without oneDNN checks the reuse on the reference
#endif
  vision_state<float> st;
  host_tensor<float, 3> a({2, 17, 32}), b({1, 37, 32}), c({2, 17, 32});
  auto px24 = safetensors_file::open(fixture / "cases.safetensors").load_dynamic<float>("pixel_values_24");
  vision_forward(be, m, st, pixels, a.view());
  vision_forward(be, m, st, tensor_view<const float, 4>(px24.data.data(), {1, 3, 24, 24}), b.view());
  vision_forward(be, m, st, pixels, c.view());
  CHECK(std::memcmp(a.data(), c.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0);
}

TEST_CASE("position embeddings are interpolated as torch's bicubic (align_corners False)") {
  const auto m = load_vision_model<double>(fixture);
  const auto file = safetensors_file::open(fixture / "cases.safetensors");
  for (auto [name, gh, gw] : {std::tuple{"24", 6, 6}, std::tuple{"8", 2, 2}, std::tuple{"12x20", 3, 5}}) {
    const auto want = file.load_dynamic<double>(std::string("position_embedding_") + name);
    host_tensor<double, 3> got({1, 1 + gh * gw, 32});
    interpolate_position_embedding(got.view(), detail::as_const(m.w.position_embedding), gh, gw);
    // computed in double; the fixture is rounded to float32 (6e-8 relative)
    CHECK(relative_error(std::string("position_embedding_") + name, got.data(), want) <= 1e-6);
  }
  // the same grid is the identity
  host_tensor<double, 3> same({1, 17, 32});
  interpolate_position_embedding(same.view(), detail::as_const(m.w.position_embedding), 4, 4);
  CHECK(std::memcmp(same.data(), m.w.position_embedding.data(), sizeof(double) * 17 * 32) == 0);
}

TEST_CASE("vision checkpoint errors name the tensor and the expected shape") {
  SUBCASE("a missing tensor") {
    testing::temp_dir dir;
    write_checkpoint(dir, [](auto& e) {
      std::erase_if(e, [](const safetensors_entry& x) { return x.name() == "vision_model.encoder.layers.1.mlp.fc1.weight"; });
    });
    const auto msg = message_of<format_error>([&] { load_vision_model(dir.path); });
    INFO(msg);
    CHECK(msg.find("missing tensor 'vision_model.encoder.layers.1.mlp.fc1.weight'") != std::string::npos);
    CHECK(msg.find("(64, 32)") != std::string::npos);
  }
  SUBCASE("a tensor of another shape") {
    testing::temp_dir dir;
    write_checkpoint(dir, [](auto& e) {
      for (auto& x : e)
        if (x.name() == "vision_model.encoder.layers.0.self_attn.qkv.bias")
          x = safetensors_entry(x.name(), safetensors_dtype::f32, {64}, std::vector<std::byte>(64 * 4));
    });
    const auto msg = message_of<shape_error>([&] { load_vision_model(dir.path); });
    INFO(msg);
    CHECK(msg.find("'vision_model.encoder.layers.0.self_attn.qkv.bias' has shape (64)") != std::string::npos);
    CHECK(msg.find("(96)") != std::string::npos);
  }
  SUBCASE("a position table for another image size") {
    testing::temp_dir dir;
    write_checkpoint(dir, [](auto& e) {
      for (auto& x : e)
        if (x.name() == "vision_model.embeddings.position_embedding")
          x = safetensors_entry(x.name(), safetensors_dtype::f32, {1, 37, 32}, std::vector<std::byte>(37 * 32 * 4));
    });
    const auto msg = message_of<shape_error>([&] { load_vision_model(dir.path); });
    INFO(msg);
    CHECK(msg.find("position_embedding' has shape (1, 37, 32) but the vision config needs (1, 17, 32)") !=
          std::string::npos);
  }
  SUBCASE("more layers in the file than in config.json") {
    testing::temp_dir dir;
    write_checkpoint(dir, [](auto&) {},
                     R"({"model_type": "blip-2", "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                         "num_attention_heads": 4, "num_hidden_layers": 1, "patch_size": 4, "image_size": 16}})");
    const auto msg = message_of<format_error>([&] { load_vision_model(dir.path); });
    INFO(msg);
    CHECK(msg.find("vision_model.encoder.layers.1.") != std::string::npos);
    CHECK(msg.find("disagree") != std::string::npos);
  }
  SUBCASE("inconsistent vision_config values") {
    auto bad = [](const std::string& vision) {
      testing::temp_dir dir;
      std::ofstream(dir / "config.json") << R"({"model_type": "blip-2", "vision_config": )" << vision << "}";
      return message_of<format_error>([&] { load_vision_config(dir / "config.json"); });
    };
    CHECK(bad(R"({"image_size": 18, "patch_size": 4})").find("image_size = 18 is not a multiple of vision_config.patch_size = 4") != std::string::npos);
    CHECK(bad(R"({"hidden_size": 30, "num_attention_heads": 4})").find("not divisible by vision_config.num_attention_heads") != std::string::npos);
    CHECK(bad(R"({"num_hidden_layers": 0})").find("'vision_config.num_hidden_layers' = 0 must be >= 1") != std::string::npos);
    CHECK(bad(R"({"layer_norm_eps": 0})").find("layer_norm_eps") != std::string::npos);
    CHECK(bad(R"({"hidden_act": "quick_gelu"})").find("only \"gelu\"") != std::string::npos);
    CHECK(bad(R"({"patch_size": "14"})").find("'vision_config.patch_size' is the string \"14\", expected an integer") != std::string::npos);
  }
}

TEST_CASE("a sharded checkpoint (model.safetensors.index.json) loads like one file") {
  testing::temp_dir dir;
  auto entries = entries_of(safetensors_file::open(fixture / "model.safetensors"));
  // layer 1 and the post LayerNorm in the second shard, everything else in the first, as HF splits
  std::vector<safetensors_entry> first, second;
  nlohmann::json map = nlohmann::json::object();
  for (auto& e : entries) {
    const bool late = e.name().find("layers.1.") != std::string::npos || e.name().find("post_layernorm") != std::string::npos;
    map[e.name()] = late ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    (late ? second : first).push_back(std::move(e));
  }
  map["language_model.lm_head.weight"] = "model-00002-of-00002.safetensors";  // names of other parts: ignored
  save_safetensors(dir / "model-00001-of-00002.safetensors", first);
  save_safetensors(dir / "model-00002-of-00002.safetensors", second);
  std::filesystem::copy_file(fixture / "config.json", dir / "config.json");
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump();
  const auto sharded = load_vision_model<float>(dir.path);
  const auto single = load_vision_model<float>(fixture);
  REQUIRE(sharded.parameters().size() == single.parameters().size());
  CHECK(std::memcmp(sharded.parameters().data(), single.parameters().data(), single.parameters().size_bytes()) == 0);

  // a shard name that leaves the directory is refused
  map["vision_model.post_layernorm.bias"] = "../model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << nlohmann::json{{"weight_map", map}}.dump();
  const auto msg = message_of<format_error>([&] { load_vision_model(dir.path); });
  CHECK(msg.find("is not a plain file name") != std::string::npos);
  // neither a single file nor an index
  testing::temp_dir empty;
  std::filesystem::copy_file(fixture / "config.json", empty / "config.json");
  CHECK(message_of<format_error>([&] { load_vision_model(empty.path); }).find("model.safetensors") != std::string::npos);
}

TEST_CASE("vision_forward refuses images it cannot cut into patches") {
  reference_backend ref;
  const auto m = load_vision_model<float>(fixture);
  host_tensor<float, 4> px({1, 3, 18, 16});
  auto msg = message_of<shape_error>([&] { vision_forward(ref, m, px.view()); });
  INFO(msg);
  CHECK(msg.find("the image size 18 x 16 is not divisible by the patch size 4") != std::string::npos);
  host_tensor<float, 4> grey({1, 1, 16, 16});
  msg = message_of<shape_error>([&] { vision_forward(ref, m, grey.view()); });
  CHECK(msg.find("expected (B, 3, H, W)") != std::string::npos);
  host_tensor<float, 4> ok({1, 3, 16, 16});
  host_tensor<float, 3> wrong({1, 16, 32});
  vision_state<float> st;
  msg = message_of<shape_error>([&] { vision_forward(ref, m, st, ok.view(), wrong.view()); });
  CHECK(msg.find("'image_embeds' has shape (1, 16, 32) but (1, 17, 32) was expected") != std::string::npos);
}

#if BLIP2_HAS_ONEDNN
TEST_CASE("bfloat16 weights on the oneDNN backend: available, or a clear backend_error naming the CPU's ISA") {
  onednn_backend be;
  const std::string isa = onednn_cpu_isa_name();
  std::printf("oneDNN effective CPU ISA: %s; bf16 matmul (bf16 src/weights, f32 dst): %s\n", isa.c_str(),
              onednn_bf16_matmul_available(be) ? "available" : "not available");
  if (!onednn_bf16_matmul_available(be)) {
    const auto msg = message_of<backend_error>([&] { require_bf16_weights(be); });
    INFO(msg);
    CHECK(msg.find("bfloat16") != std::string::npos);
    CHECK(msg.find(isa) != std::string::npos);
  } else {  // the bf16 forward is not implemented yet (models/vit/bf16.hpp): a clear error either way
    const auto msg = message_of<backend_error>([&] { require_bf16_weights(be); });
    CHECK(msg.find("not implemented") != std::string::npos);
  }
}
#endif
