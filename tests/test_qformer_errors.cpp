// qformer_errors: every bad input to the Q-Former and to its checkpoint loader is refused with the right
// error type and a message that names what is wrong and where; and what a loader must accept (a
// Blip2ForConditionalGeneration-style checkpoint without the text side, tensors it does not use).
//
// The model is the qformer_padded fixture (tests/fixtures/make_qformer_fixtures.py): B = 3 pairs,
// Q = 3 queries, C = 24, 3 heads, 3 layers (cross-attention in layers 0 and 2), N = 5 image tokens of
// width E = 20, T = 6 text tokens, vocabulary V = 37, max_position_embeddings 12. Reference backend.
// Broken checkpoints are written into a temporary directory with save_safetensors.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/models/qformer/heads.hpp"
#include "harness/expect_error.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;
using blip2::testing::temp_dir;
namespace fs = std::filesystem;

using blip2::testing::has;
using blip2::testing::message_of;

namespace {

const fs::path fixture = fs::path(BLIP2_FIXTURE_DIR) / "qformer_padded";

// Every part must appear in the message.
void check_says(const std::string& message, const std::vector<std::string>& parts) {
  INFO("message: ", message);
  for (const auto& p : parts) {
    CAPTURE(p);
    CHECK(message.find(p) != std::string::npos);
  }
}

template <class E, class F>
void check_error(F&& f, const std::vector<std::string>& parts) {
  check_says(message_of<E>(std::forward<F>(f)), parts);
}

// The fixture's inputs.
struct fixture_inputs {
  safetensors_file file = safetensors_file::open(fixture / "inputs.safetensors");
  host_tensor<float, 3> image = file.load_f32<3>("image_embeds");          // (B, N, E)
  host_tensor<index_t, 2> ids = file.load_i64<2>("input_ids");             // (B, T)
  host_tensor<index_t, 2> mask = file.load_i64<2>("attention_mask");       // (B, T)
  index_t B = image.extent(0), N = image.extent(1), E = image.extent(2), T = ids.extent(1);
};

// A copy of the fixture's checkpoint in `dir`: config.json as is, model.safetensors with the tensors
// `keep` accepts plus `extra`.
void write_checkpoint(const fs::path& dir, const std::function<bool(const std::string&)>& keep,
                      std::vector<safetensors_entry> extra = {}) {
  const auto src = safetensors_file::open(fixture / "model.safetensors");
  std::vector<safetensors_entry> entries;
  for (const auto& t : src.tensors())
    if (keep(t.name)) entries.emplace_back(t.name, t.dtype, t.shape, src.bytes(t.name));  // borrows src
  for (auto& e : extra) entries.push_back(std::move(e));
  fs::create_directories(dir);
  fs::copy_file(fixture / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  save_safetensors(dir / "model.safetensors", entries);
}

// The text FFN of a layer: qformer.encoder.layer.{l}.intermediate.* / .output.* (not the _query ones,
// not attention.output.*).
bool is_text_ffn(const std::string& name) {
  const std::string prefix = "qformer.encoder.layer.";
  if (name.rfind(prefix, 0) != 0) return false;
  std::size_t i = prefix.size();
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  const std::string rest = name.substr(i);  // ".intermediate.dense.weight", ".attention.output.dense.bias", ...
  return rest.rfind(".intermediate.", 0) == 0 || rest.rfind(".output.", 0) == 0;
}

// Tensors a Blip2ForConditionalGeneration checkpoint does not have.
bool is_text_side(const std::string& name) {
  return name.rfind("embeddings.", 0) == 0 || name.rfind("text_projection.", 0) == 0 ||
         name.rfind("vision_projection.", 0) == 0 || name.rfind("itm_head.", 0) == 0 || is_text_ffn(name);
}

// The image pass's query output, (Q B, C) sequence-major, as a vector.
std::vector<float> image_pass_output(const qformer_model<float>& m, const fixture_inputs& in) {
  reference_backend be;
  image_kv_state<float> kv;
  encode_image_kv(be, m, kv, in.image.view());
  qformer_pass_state<float> st;
  qformer_pass_inputs<float> p;
  p.batch = in.B;
  p.queries = true;
  p.image = &kv;
  qformer_forward(be, m, st, p);
  return {st.output().data(), st.output().data() + st.output().size()};
}

}  // namespace

TEST_CASE("qformer errors: bad pass inputs name what is wrong and where") {
  reference_backend be;
  const auto m = load_qformer<float>(fixture);
  fixture_inputs in;
  const index_t B = in.B, T = in.T;
  image_kv_state<float> kv;
  encode_image_kv(be, m, kv, in.image.view());
  qformer_pass_state<float> st;
  // a joint pass with everything right, which each case breaks in one place
  qformer_pass_inputs<float> good;
  good.batch = B;
  good.queries = true;
  good.image = &kv;
  good.input_ids = in.ids.view();
  good.attention_mask = in.mask.view();
  qformer_forward(be, m, st, good);  // runs

  SUBCASE("image_embeds wider than encoder_hidden_size") {
    host_tensor<float, 3> wide({B, in.N, in.E + 1});
    image_kv_state<float> kv2;
    check_error<shape_error>([&] { encode_image_kv(be, m, kv2, wide.view()); },
                             {"image_embeds", "(3, 5, 21)", "encoder_hidden_size = 20"});
  }
  SUBCASE("image_embeds without image tokens") {
    host_tensor<float, 3> empty({B, 0, in.E});
    image_kv_state<float> kv2;
    check_error<shape_error>([&] { encode_image_kv(be, m, kv2, empty.view()); }, {"image_embeds", "(3, 0, 20)", "N >= 1"});
  }
  SUBCASE("an id outside the vocabulary") {
    auto ids = in.ids;
    ids(2, 3) = 37;
    auto p = good;
    p.input_ids = ids.view();
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"input_ids(2, 3) = 37", "vocab_size = 37"});
    ids(2, 3) = -1;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"input_ids(2, 3) = -1"});
    p.queries = false;  // the text pass alone, too
    p.image = nullptr;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"input_ids(2, 3) = -1"});
  }
  SUBCASE("input_ids longer than max_position_embeddings") {
    host_tensor<index_t, 2> ids({B, 13}, 1), mask({B, 13}, 1);
    auto p = good;
    p.input_ids = ids.view();
    p.attention_mask = mask.view();
    check_error<shape_error>([&] { qformer_forward(be, m, st, p); }, {"13 tokens", "max_position_embeddings = 12"});
    // 12 tokens fit
    host_tensor<index_t, 2> ids12({B, 12}, 1);
    p.input_ids = ids12.view();
    p.attention_mask = {};
    CHECK_NOTHROW(qformer_forward(be, m, st, p));
  }
  SUBCASE("input_ids of another batch") {
    host_tensor<index_t, 2> ids({B - 1, T}, 1);
    auto p = good;
    p.input_ids = ids.view();
    p.attention_mask = {};
    check_error<shape_error>([&] { qformer_forward(be, m, st, p); }, {"input_ids", "(2, 6)", "(3, 6)"});
  }
  SUBCASE("an attention_mask of the wrong shape") {
    host_tensor<index_t, 2> mask({B, T - 1}, 1);
    auto p = good;
    p.attention_mask = mask.view();
    check_error<shape_error>([&] { qformer_forward(be, m, st, p); }, {"attention_mask", "(3, 5)", "(3, 6)"});
  }
  SUBCASE("an attention_mask value of 2") {
    auto mask = in.mask;
    mask(1, 4) = 2;
    auto p = good;
    p.attention_mask = mask.view();
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"attention_mask(1, 4) = 2", "0 or 1"});
  }
  SUBCASE("image_index out of range or of the wrong length") {
    auto p = good;
    const std::vector<index_t> out_of_range = {0, 3, 1}, negative = {0, -1, 1}, short_index = {0, 1};
    p.image_index = out_of_range;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"image_index 3", "[0, 3)"});
    p.image_index = negative;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"image_index -1", "[0, 3)"});
    p.image_index = short_index;
    check_error<shape_error>([&] { qformer_forward(be, m, st, p); }, {"image_index has 2 entries", "batch of 3"});
  }
  SUBCASE("a batch that differs from the number of images, without image_index") {
    auto p = good;
    p.batch = 2;
    p.input_ids = {};
    p.attention_mask = {};
    check_error<shape_error>([&] { qformer_forward(be, m, st, p); }, {"3 images for a batch of 2", "image_index"});
  }
  SUBCASE("a batch of 0") {
    auto p = good;
    p.batch = 0;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"batch must be positive, got 0"});
  }
  SUBCASE("a pass with neither queries nor text") {
    qformer_pass_inputs<float> p;
    p.batch = B;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"needs queries, text, or both"});
  }
  SUBCASE("a pass with queries but no image") {
    auto p = good;
    p.image = nullptr;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"image K/V", "encode_image_kv"});
  }
  SUBCASE("output_positions outside [Lq, L], or on a pass that needs every position") {
    auto p = good;  // Lq = 4 queries + 6 tokens
    const index_t Lq = m.config().num_query_tokens, L = Lq + T;
    p.output_positions = Lq - 1;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); },
                             {"output_positions = " + std::to_string(Lq - 1), "[" + std::to_string(Lq) + ", L = " + std::to_string(L) + "]"});
    p.output_positions = L + 1;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"output_positions = " + std::to_string(L + 1)});
    p.output_positions = L;
    CHECK_NOTHROW(qformer_forward(be, m, st, p));
    p.output_positions = Lq;
    p.attention = qformer_attention::multimodal_causal;
    check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"output_positions needs a bidirectional pass"});
    auto t = good;  // a text pass: [CLS] alone is allowed, no position is not
    t.queries = false;
    t.image = nullptr;
    t.output_positions = -1;
    check_error<value_error>([&] { qformer_forward(be, m, st, t); }, {"output_positions = -1", "[1, L = "});
  }
}

TEST_CASE("qformer errors: a text pass on a model without the text side") {
  reference_backend be;
  auto cfg = to_model_config(load_blip2_config(fixture / "config.json"), /*with_text=*/false);
  const qformer_model<float> m(cfg);
  fixture_inputs in;
  qformer_pass_state<float> st;
  qformer_pass_inputs<float> p;
  p.batch = in.B;
  p.input_ids = in.ids.view();
  check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"no text side", "Blip2ForConditionalGeneration"});
  // with queries too (the ITM joint pass)
  image_kv_state<float> kv;
  encode_image_kv(be, m, kv, in.image.view());
  p.queries = true;
  p.image = &kv;
  check_error<value_error>([&] { qformer_forward(be, m, st, p); }, {"no text side"});
}

TEST_CASE("qformer errors: broken checkpoints") {
  temp_dir tmp;
  const auto dir = tmp.path / "model";

  SUBCASE("a missing parameter is named, with its shape") {
    const std::string gone = "qformer.encoder.layer.2.crossattention.attention.value.weight";
    write_checkpoint(dir, [&](const std::string& n) { return n != gone; });
    check_error<format_error>([&] { (void)load_qformer<float>(dir); },
                              {"model.safetensors", "missing tensor '" + gone + "'", "(24, 20)"});
  }
  SUBCASE("a missing text-side parameter of a Blip2ForImageTextRetrieval checkpoint") {
    const std::string gone = "itm_head.bias";
    write_checkpoint(dir, [&](const std::string& n) { return n != gone; });
    check_error<format_error>([&] { (void)load_qformer<float>(dir); }, {"missing tensor 'itm_head.bias'", "(2)"});
  }
  SUBCASE("a parameter of the wrong shape is named, with both shapes") {
    const std::string bad = "qformer.encoder.layer.1.intermediate_query.dense.weight";  // (40, 24)
    const std::vector<float> data(24 * 40, 0.f);
    write_checkpoint(dir, [&](const std::string& n) { return n != bad; },
                     {safetensors_entry(bad, safetensors_dtype::f32, {24, 40}, std::as_bytes(std::span<const float>(data)))});
    check_error<shape_error>([&] { (void)load_qformer<float>(dir); }, {"'" + bad + "'", "(24, 40)", "(40, 24)"});
  }
  SUBCASE("a parameter of a dtype that is not a float") {
    const std::string bad = "qformer.layernorm.bias";  // (24)
    const std::vector<std::int64_t> data(24, 0);
    write_checkpoint(dir, [&](const std::string& n) { return n != bad; },
                     {safetensors_entry(bad, safetensors_dtype::i64, {24},
                                        std::as_bytes(std::span<const std::int64_t>(data)))});
    check_error<format_error>([&] { (void)load_qformer<float>(dir); }, {"'" + bad + "'", "I64"});
  }
  SUBCASE("a config.json with hidden_size not divisible by num_attention_heads") {
    write_checkpoint(dir, [](const std::string&) { return true; });
    std::string text;
    {
      std::ifstream f(dir / "config.json");
      text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    const std::string from = "\"hidden_size\": 24", to = "\"hidden_size\": 25";
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    std::ofstream(dir / "config.json") << text;
    check_error<format_error>([&] { (void)load_qformer<float>(dir); },
                              {"config.json", "hidden_size = 25", "not divisible", "num_attention_heads = 3"});
  }
  SUBCASE("weights with a layer that config.json does not have") {
    write_checkpoint(dir, [](const std::string&) { return true; });
    std::string text;
    {
      std::ifstream f(dir / "config.json");
      text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    const std::string from = "\"num_hidden_layers\": 3", to = "\"num_hidden_layers\": 2";
    const auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    std::ofstream(dir / "config.json") << text;
    check_error<format_error>([&] { (void)load_qformer<float>(dir); },
                              {"qformer.encoder.layer.2.", "2 layers", "config.json and the weights disagree"});
  }
  SUBCASE("a config.json that is missing") {
    write_checkpoint(dir, [](const std::string&) { return true; });
    fs::remove(dir / "config.json");
    check_error<format_error>([&] { (void)load_qformer<float>(dir); }, {"config.json", "no such file"});
  }
  SUBCASE("a truncated model.safetensors") {
    write_checkpoint(dir, [](const std::string&) { return true; });
    const auto path = dir / "model.safetensors";
    fs::resize_file(path, fs::file_size(path) / 2);
    check_error<format_error>([&] { (void)load_qformer<float>(dir); }, {path.string(), "truncated"});
    fs::resize_file(path, 5);  // not even the header length
    check_error<format_error>([&] { (void)load_qformer<float>(dir); }, {path.string(), "too short"});
  }
}

TEST_CASE("qformer checkpoint: without the text side it loads the image path, which gives the same output") {
  temp_dir tmp;
  const auto dir = tmp.path / "model";
  write_checkpoint(dir, [](const std::string& n) { return !is_text_side(n); });
  // the filter kept the query FFN and the attention outputs, and dropped exactly the text side
  const auto written = safetensors_file::open(dir / "model.safetensors");
  CHECK(written.contains("qformer.encoder.layer.0.intermediate_query.dense.weight"));
  CHECK(written.contains("qformer.encoder.layer.0.output_query.LayerNorm.bias"));
  CHECK(written.contains("qformer.encoder.layer.0.attention.output.dense.weight"));
  CHECK(written.contains("qformer.encoder.layer.2.crossattention.output.LayerNorm.weight"));
  CHECK_FALSE(written.contains("qformer.encoder.layer.1.output.dense.weight"));
  CHECK_FALSE(written.contains("qformer.encoder.layer.2.intermediate.dense.bias"));
  CHECK_FALSE(written.contains("embeddings.position_embeddings.weight"));

  auto image_only = load_qformer<float>(dir);
  auto full = load_qformer<float>(fixture);
  CHECK_FALSE(image_only.config().with_text);
  CHECK(full.config().with_text);
  // every tensor the filter dropped is a parameter of the full model only
  const auto src = safetensors_file::open(fixture / "model.safetensors");
  std::size_t dropped = 0;
  for (const auto& t : src.tensors())
    if (is_text_side(t.name)) dropped += static_cast<std::size_t>(t.numel());
  CHECK(full.parameters().size() - image_only.parameters().size() == dropped);

  fixture_inputs in;
  const auto a = image_pass_output(image_only, in), b = image_pass_output(full, in);
  REQUIRE(a.size() == b.size());
  CHECK(a == b);  // the same weights and the same operations: bitwise equal
  // and it equals the fixture's query_output (the (B, Q, C) order of the sequence-major rows)
  const auto want = safetensors_file::open(fixture / "expected.safetensors").load_dynamic<double>("query_output");
  const index_t B = in.B, Q = image_only.config().num_query_tokens, C = image_only.config().qformer.hidden_size;
  double maxdiff = 0, maxref = 0;
  for (index_t bq = 0; bq < B * Q; ++bq)
    for (index_t c = 0; c < C; ++c) {
      const index_t b_ = bq / Q, q = bq % Q;
      const double w = want.data[static_cast<std::size_t>(bq * C + c)];
      maxdiff = std::max(maxdiff, std::abs(a[static_cast<std::size_t>((q * B + b_) * C + c)] - w));
      maxref = std::max(maxref, std::abs(w));
    }
  CHECK(maxdiff <= 1e-4 * maxref);
}

TEST_CASE("qformer checkpoint: tensors the Q-Former does not use are ignored") {
  const auto src = safetensors_file::open(fixture / "model.safetensors");
  // the fixture itself carries some: the vision tower, the ITC temperature, the ITG head's bias
  CHECK(src.contains("vision_model.embeddings.class_embedding"));
  CHECK(src.contains("temp"));
  CHECK(src.contains("cls.predictions.bias"));

  temp_dir tmp;
  const auto dir = tmp.path / "model";
  const std::vector<float> junk(7 * 24, 0.25f);
  const auto bytes = std::as_bytes(std::span<const float>(junk));
  write_checkpoint(dir, [](const std::string&) { return true; },
                   {safetensors_entry("language_projection.weight", safetensors_dtype::f32, {7, 24}, bytes),
                    safetensors_entry("language_model.lm_head.weight", safetensors_dtype::f32, {24, 7}, bytes),
                    safetensors_entry("vision_model.post_layernorm.weight", safetensors_dtype::f32, {168}, bytes)});
  auto with_extra = load_qformer<float>(dir);
  auto plain = load_qformer<float>(fixture);
  REQUIRE(with_extra.parameters().size() == plain.parameters().size());
  CHECK(std::ranges::equal(with_extra.parameters(), plain.parameters()));
}
