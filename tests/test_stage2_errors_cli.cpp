// stage2_errors_cli: the examples/stage2_step program run as a user runs it, and every bad stage-2 input
// (checkpoint, config, batch) refused with the right error type and a message that names the file,
// tensor or field and what was expected; none crashes, hangs or returns a silently wrong loss.
//
// Fixtures (tests/fixtures/make_stage2_fixtures.py): stage2_opt (pre-LN, one model.safetensors, tied
// lm_head) and stage2_opt_postln (post-LN, project_in/out, lm_head saved, two shards and an index).
// Both: B = 3, N = 17 image tokens of E = 32, Q = 4 queries of C = 12, T = 9 text tokens, V = 336,
// max_position_embeddings 48 (so Q + T may reach 48, not 49). stage2_opt's decoder: 2 layers, width 16,
// ffn 36. Broken checkpoints are copies written into a temporary directory with save_safetensors (no
// Python at test time).
//
// The program on both fixtures and every backend of the build: loss_lm and logits within 1e-4 of the
// tensor's largest magnitude, every grad.* within 1e-3 with a floor of 1e-3 x the largest gradient (the
// key biases' gradients are zero in exact arithmetic; float32 leaves round-off there), exactly the
// grad.* names of expected.safetensors and none for vision_model.* or language_model.*. --help exits 0,
// usage errors exit 2, failures exit 1 with a message and no output file.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "harness/cli_checks.hpp"

using namespace blip2;
using namespace blip2::testing;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;
const std::string exe = BLIP2_STAGE2_STEP_EXE;
const std::string decoder = "language_model.model.decoder.";

// f throws E and its message contains every part.
template <class E, class F>
void check_error(F&& f, const std::vector<std::string>& parts) {
  const std::string message = message_of<E>(std::forward<F>(f));
  INFO("message: ", message);
  for (const auto& p : parts) {
    CAPTURE(p);
    CHECK(has(message, p));
  }
}

safetensors_entry f32_zeros(const std::string& name, std::vector<index_t> shape) {
  index_t n = 1;
  for (auto e : shape) n *= e;
  return {name, safetensors_dtype::f32, std::move(shape), std::vector<std::byte>(static_cast<std::size_t>(n) * 4)};
}
safetensors_entry i64_entry(const std::string& name, std::vector<index_t> shape, const std::vector<index_t>& v) {
  std::vector<std::byte> b(v.size() * sizeof(index_t));
  std::memcpy(b.data(), v.data(), b.size());
  return {name, safetensors_dtype::i64, std::move(shape), std::move(b)};
}

// A copy of a fixture's checkpoint in `dir`: config.json after `edit`, and one model.safetensors with the
// tensors of the fixture's file(s) that `keep` accepts, then `extra`.
void write_checkpoint(const fs::path& dir, const std::string& fixture,
                      const std::function<bool(const std::string&)>& keep, std::vector<safetensors_entry> extra = {},
                      const std::function<void(nlohmann::json&)>& edit = {}) {
  const auto files = open_checkpoint_files(fixtures / fixture);
  std::vector<safetensors_entry> entries;
  for (const auto& f : files)
    for (const auto& t : f.tensors())
      if (keep(t.name)) entries.emplace_back(t.name, t.dtype, t.shape, f.bytes(t.name));  // borrows the mapping
  for (auto& e : extra) entries.push_back(std::move(e));
  auto config = nlohmann::json::parse(read_text(fixtures / fixture / "config.json"));
  if (edit) edit(config);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  save_safetensors(dir / "model.safetensors", entries);
}
bool all(const std::string&) { return true; }
auto all_but(std::string name) {
  return [name = std::move(name)](const std::string& n) { return n != name; };
}

// The fixture's batch.
struct batch {
  safetensors_file file;
  host_tensor<float, 3> image = file.load_f32<3>("image_embeds");  // (B, N, E)
  host_tensor<index_t, 2> ids = file.load_i64<2>("input_ids");    // (B, T)
  host_tensor<index_t, 2> mask = file.load_i64<2>("attention_mask");
  host_tensor<index_t, 2> labels = file.load_i64<2>("labels");
  explicit batch(const std::string& fixture) : file(safetensors_file::open(fixtures / fixture / "inputs.safetensors")) {}
};

// (B, T) filled with value.
host_tensor<index_t, 2> text_of(index_t B, index_t T, index_t value) { return host_tensor<index_t, 2>({B, T}, value); }

float forward(const blip2_opt_model<float>& m, tensor_view<const float, 3> image, tensor_view<const index_t, 2> ids,
              tensor_view<const index_t, 2> mask, tensor_view<const index_t, 2> labels) {
  reference_backend be;
  stage2_state<float> st;
  return stage2_forward(be, m, st, image, ids, mask, labels);
}

std::vector<std::string> step_args(const fs::path& model, const fs::path& inputs, const fs::path& output,
                                   const std::string& backend = "reference") {
  return {"--model", model.string(), "--inputs", inputs.string(), "--output", output.string(), "--backend", backend};
}

// max |got - want| over a tensor and max |want|.
std::pair<double, double> diff(const safetensors_file& got, const safetensors_file& want, const std::string& name) {
  REQUIRE(got.contains(name));
  REQUIRE(got.info(name).dtype == safetensors_dtype::f32);
  REQUIRE(got.info(name).shape == want.info(name).shape);
  const auto g = got.load_dynamic<double>(name), w = want.load_dynamic<double>(name);
  double d = 0, ref = 0;
  for (std::size_t k = 0; k < w.data.size(); ++k) {
    d = std::max(d, std::isfinite(g.data[k]) ? std::abs(g.data[k] - w.data[k]) : INFINITY);
    ref = std::max(ref, std::abs(w.data[k]));
  }
  return {d, ref};
}

}  // namespace

TEST_CASE("stage2_step: loss, logits and exactly the trainable gradients of the PyTorch fixtures, on every backend") {
  for (const std::string fixture : {"stage2_opt", "stage2_opt_postln"})
    for (const auto& backend : built_backends()) {
      CAPTURE(fixture);
      CAPTURE(backend);
      temp_dir dir;
      const auto out = dir / "out.safetensors";
      const auto r = run_program(exe, dir, step_args(fixtures / fixture, fixtures / fixture / "inputs.safetensors", out, backend));
      INFO(r.cmd, "\nstderr: ", r.err);
      REQUIRE(r.status == 0);
      CHECK(r.err.empty());
      CHECK(has(read_text(dir / "stdout.txt"), "loss_lm"));
      const auto got = safetensors_file::open(out);
      const auto want = safetensors_file::open(fixtures / fixture / "expected.safetensors");
      std::set<std::string> grads;
      for (const auto& name : want.names())
        if (name.rfind("grad.", 0) == 0) grads.insert(name);
      CHECK(grads.size() > 30);  // query_tokens, the Q-Former's query path, the projection
      std::set<std::string> names = grads;
      names.insert({"loss_lm", "logits"});
      const auto got_names = got.names();
      CHECK(std::set<std::string>(got_names.begin(), got_names.end()) == names);  // exactly these
      for (const auto& name : got_names) {
        CAPTURE(name);
        CHECK_FALSE(has(name, "vision_model"));
        CHECK_FALSE(has(name, "language_model"));
      }
      CHECK(got.info("loss_lm").shape.empty());  // 0-d
      for (const std::string name : {"loss_lm", "logits"}) {
        const auto [d, ref] = diff(got, want, name);
        INFO(name, ": max diff ", d, ", largest magnitude ", ref);
        CHECK(d <= 1e-4 * ref);
      }
      double floor = 0;
      for (const auto& name : grads) floor = std::max(floor, diff(want, want, name).second);
      floor *= 1e-3;
      for (const auto& name : grads) {
        const auto [d, ref] = diff(got, want, name);
        INFO(name, ": max diff ", d, ", largest magnitude ", ref, ", floor ", floor);
        CHECK(d <= 1e-3 * std::max(ref, floor));
      }
    }
}

TEST_CASE("stage2_step: --help exits 0, usage errors exit 2 with the usage line") {
  temp_dir dir;
  const auto model = (fixtures / "stage2_opt").string();
  const auto in = (fixtures / "stage2_opt" / "inputs.safetensors").string();
  const auto out = (dir / "out.safetensors").string();
  const std::vector<usage_case> cases = {
      {{}, "missing --model"},
      {{"--model", model, "--output", out}, "missing --inputs"},
      {{"--model", model, "--inputs", in}, "missing --output"},
      {{"--model", model, "--inputs", in, "--output"}, "--output needs a value"},
      {{"--model", model, "--inputs", in, "--output", out, "--backend", "cuda"}, "unknown backend 'cuda'"},
      {{"--model", model, "--inputs", in, "--output", out, "--beams", "5"}, "unknown argument '--beams'"},
  };
  check_usage_errors("stage2_step", exe, dir, cases);
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("stage2 checkpoints: each broken file or config is refused, naming the file and what was expected") {
  temp_dir dir;
  const auto ck = dir / "ck";
  const auto load = [&] { return load_blip2_opt<float>(ck); };

  SUBCASE("the copy itself loads and runs (the cases below break one thing each)") {
    write_checkpoint(ck, "stage2_opt_postln", all);
    const auto m = load();
    batch in("stage2_opt_postln");
    CHECK(std::isfinite(forward(m, in.image.view(), in.ids.view(), in.mask.view(), in.labels.view())));
  }
  SUBCASE("a missing decoder tensor") {
    write_checkpoint(ck, "stage2_opt", all_but(decoder + "layers.1.fc2.weight"));
    check_error<format_error>(load, {"model.safetensors", "missing tensor '" + decoder + "layers.1.fc2.weight'", "(16, 36)"});
  }
  SUBCASE("a decoder tensor of another shape") {
    const auto name = decoder + "layers.0.fc1.weight";
    write_checkpoint(ck, "stage2_opt", all_but(name), {f32_zeros(name, {36, 15})});
    check_error<shape_error>(load, {"model.safetensors", name, "(36, 15)", "(36, 16)"});
  }
  SUBCASE("embed_tokens with fewer rows than text_config.vocab_size") {
    const auto name = decoder + "embed_tokens.weight";
    write_checkpoint(ck, "stage2_opt", all_but(name), {f32_zeros(name, {330, 16})});
    check_error<shape_error>(load, {name, "(330, 16)", "(336, 16)", "text_config.vocab_size"});
  }
  SUBCASE("a saved lm_head of another shape") {
    const auto name = std::string("language_model.lm_head.weight");
    write_checkpoint(ck, "stage2_opt_postln", all_but(name), {f32_zeros(name, {336, 20})});
    check_error<shape_error>(load, {name, "(336, 20)", "(336, 10)"});
  }
  SUBCASE("a third layer's tensor for a two-layer config") {
    const auto name = decoder + "layers.2.fc1.bias";
    write_checkpoint(ck, "stage2_opt", all, {f32_zeros(name, {36})});
    check_error<format_error>(load, {"model.safetensors", name, "2 layers", "config.json and the weights disagree"});
  }
  SUBCASE("project_in in a pre-LN decoder whose word_embed_proj_dim is hidden_size") {
    const auto name = decoder + "project_in.weight";
    write_checkpoint(ck, "stage2_opt", all, {f32_zeros(name, {16, 16})});
    check_error<format_error>(load, {name, "word_embed_proj_dim 16", "no such parameter"});
  }
  SUBCASE("text_config.model_type t5") {
    write_checkpoint(ck, "stage2_opt", all, {}, [](nlohmann::json& c) { c["text_config"]["model_type"] = "t5"; });
    check_error<format_error>(load, {"config.json", "text_config.model_type", "\"t5\"", "opt"});
    check_error<format_error>([&] { load_blip2_opt_config(ck / "config.json"); }, {"\"t5\""});
  }
  SUBCASE("a text_config field of the wrong JSON type") {
    write_checkpoint(ck, "stage2_opt", all, {}, [](nlohmann::json& c) { c["text_config"]["num_attention_heads"] = "2"; });
    check_error<format_error>(load, {"config.json", "text_config.num_attention_heads", "the string \"2\"", "integer"});
  }
  SUBCASE("a Blip2ForImageTextRetrieval-style file (the Q-Former's text side)") {
    write_checkpoint(ck, "stage2_opt", all, {f32_zeros("embeddings.word_embeddings.weight", {30, 12})});
    check_error<format_error>(load, {"model.safetensors", "embeddings.word_embeddings.weight", "Blip2ForImageTextRetrieval"});
  }
  SUBCASE("a shard that the index names is missing") {
    fs::create_directories(ck);
    for (const auto& e : fs::directory_iterator(fixtures / "stage2_opt_postln"))
      if (e.path().filename() != "model-00002-of-00002.safetensors") fs::copy_file(e.path(), ck / e.path().filename());
    check_error<format_error>(load, {"model.safetensors.index.json", "model-00002-of-00002.safetensors"});
  }
  SUBCASE("no language_projection.bias") {
    write_checkpoint(ck, "stage2_opt", all_but("language_projection.bias"));
    check_error<format_error>(load, {"model.safetensors", "missing tensor 'language_projection.bias'", "(16)"});
  }
}

TEST_CASE("stage2_forward: each bad batch is refused, naming the input, the position and what was expected") {
  const auto m = load_blip2_opt<float>(fixtures / "stage2_opt");
  batch in("stage2_opt");
  const index_t B = 3, T = 9, V = 336;
  auto run = [&](const host_tensor<index_t, 2>& ids, const host_tensor<index_t, 2>& mask,
                 const host_tensor<index_t, 2>& labels) {
    return forward(m, in.image.view(), ids.view(), mask.view(), labels.view());
  };
  REQUIRE(in.ids.extent(0) == B);
  REQUIRE(in.ids.extent(1) == T);
  CHECK(std::isfinite(run(in.ids, in.mask, in.labels)));  // the batch each case breaks in one place

  SUBCASE("an id outside the embedding") {
    auto ids = in.ids;
    ids(1, 4) = V;
    check_error<value_error>([&] { run(ids, in.mask, in.labels); }, {"input_ids(1, 4) = 336", "[0, 336)"});
  }
  SUBCASE("labels of another shape") {
    const auto labels = text_of(B, T - 1, -100);
    check_error<shape_error>([&] { run(in.ids, in.mask, labels); }, {"labels", "(3, 8)", "(3, 9)"});
  }
  SUBCASE("a label outside [0, V) that is not -100") {
    for (const index_t bad : {V, index_t{-1}, index_t{-99}}) {
      CAPTURE(bad);
      auto labels = in.labels;
      labels(2, 5) = bad;
      check_error<value_error>([&] { run(in.ids, in.mask, labels); },
                               {"labels(2, 5) = " + std::to_string(bad), "[0, 336)", "-100"});
    }
  }
  SUBCASE("an attention_mask value other than 0 and 1") {
    auto mask = in.mask;
    mask(0, 3) = 2;
    check_error<value_error>([&] { run(in.ids, mask, in.labels); }, {"attention_mask(0, 3) = 2", "0 or 1"});
  }
  SUBCASE("Q + T positions beyond max_position_embeddings (48 fit, 49 do not)") {
    const auto ok = text_of(B, 48 - 4, 5);
    CHECK(std::isfinite(run(ok, host_tensor<index_t, 2>({B, 44}, 1), ok)));
    const auto ids = text_of(B, 49 - 4, 5);
    check_error<value_error>([&] { run(ids, host_tensor<index_t, 2>({B, 45}, 1), ids); },
                             {"position 48", "max_position_embeddings = 48"});
  }
  SUBCASE("image_embeds of another width") {
    host_tensor<float, 3> wide({B, 17, 33});
    check_error<shape_error>([&] { forward(m, wide.view(), in.ids.view(), in.mask.view(), in.labels.view()); },
                             {"image_embeds", "(3, 17, 33)", "encoder_hidden_size = 32"});
  }
  SUBCASE("image_embeds for another number of texts") {
    host_tensor<float, 3> two({2, 17, 32});
    check_error<shape_error>([&] { forward(m, two.view(), in.ids.view(), in.mask.view(), in.labels.view()); },
                             {"2 images for 3 texts"});
  }
}

TEST_CASE("stage2_step: failures exit 1 with a message naming what is wrong, and write no output") {
  temp_dir dir;
  const auto out = dir / "out.safetensors";
  const auto model = fixtures / "stage2_opt";
  const auto in = dir / "in.safetensors";
  const auto good_in = model / "inputs.safetensors";
  auto fails = [&](const fs::path& m, const fs::path& i, const std::vector<std::string>& says) {
    check_fails("stage2_step", exe, dir, step_args(m, i, out), says, out);
  };
  auto write_inputs = [&](const std::vector<std::string>& names, std::vector<safetensors_entry> extra = {}) {
    copy_tensors(good_in, in, names, std::move(extra));
  };

  SUBCASE("a missing decoder tensor") {
    write_checkpoint(dir / "ck", "stage2_opt", all_but(decoder + "layers.1.fc2.weight"));
    fails(dir / "ck", good_in, {"missing tensor '" + decoder + "layers.1.fc2.weight'", "(16, 36)"});
  }
  SUBCASE("a T5 text model") {
    write_checkpoint(dir / "ck", "stage2_opt", all, {}, [](nlohmann::json& c) { c["text_config"]["model_type"] = "t5"; });
    fails(dir / "ck", good_in, {"config.json", "\"t5\""});
  }
  SUBCASE("no labels") {
    write_inputs({"image_embeds", "input_ids", "attention_mask"});
    fails(model, in, {"in.safetensors", "no tensor 'labels'"});
  }
  SUBCASE("a label outside the vocabulary") {
    std::vector<index_t> labels(3 * 9, -100);
    labels[1 * 9 + 2] = 336;
    write_inputs({"image_embeds", "input_ids", "attention_mask"}, {i64_entry("labels", {3, 9}, labels)});
    fails(model, in, {"labels(1, 2) = 336"});
  }
  SUBCASE("a text too long for the positions") {
    const std::vector<index_t> ids(3 * 45, 5);
    write_inputs({"image_embeds"}, {i64_entry("input_ids", {3, 45}, ids), i64_entry("labels", {3, 45}, ids)});
    fails(model, in, {"max_position_embeddings = 48"});
  }
  SUBCASE("image_embeds of another width") {
    write_inputs({"input_ids", "attention_mask", "labels"}, {f32_zeros("image_embeds", {3, 17, 31})});
    fails(model, in, {"image_embeds", "(3, 17, 31)", "encoder_hidden_size = 32"});
  }
}
