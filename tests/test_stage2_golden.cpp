// stage2_golden: BLIP-2 stage 2 with OPT against PyTorch fixtures (tests/fixtures/make_stage2_fixtures.py,
// float64, LAVIS's loss, Hugging Face's OPT): the loss, the logits and the gradient of every trainable
// tensor, for a pre-LN decoder (stage2_opt) and an opt-350m-shaped one (post-LN, project_in/out, lm_head
// saved, sharded: stage2_opt_postln), right-padded and left-padded text, on the reference backend (float,
// double) and the oneDNN backend (float). Then generation (generation.json: the float64 reference of
// Hugging Face's greedy and beam search, tests/fixtures/hf_generation.py, over the same decoder): the ids
// must be identical, the scores within 1e-5 relative (float logits; the reference's margins between the
// chosen and the next candidate are above 2e-4, checked by the fixture script), on both backends; and the
// prompts' ids from the tokenizer files of the checkpoint (tokens.json).
//
// Tolerances: outputs within 1e-4 of the tensor's largest magnitude in float (the fixture's own float32
// rounding is 6e-8; float32 sums of a few hundred terms add ~1e-6 relative, so 1e-4 catches any
// semantic difference: a wrong mask or position moves logits by O(1)); gradients within 1e-3 of the
// largest magnitude of the tensor with a floor of 1e-3 x the largest gradient of all (the key biases'
// gradients are zero in exact arithmetic, softmax being shift-invariant, and float32 leaves round-off of
// the size of the other gradients' there). double: 2e-6 (the fixture is float64 rounded to float32).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "blip2/backend/reference/reference_backend.hpp"
#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#include <nlohmann/json.hpp>

#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/models/blip2_opt/generate_text.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;

template <class T>
double max_abs(const T* p, index_t n) {
  double m = 0;
  for (index_t k = 0; k < n; ++k) m = std::max(m, std::abs(static_cast<double>(p[k])));
  return m;
}

template <class T, class Be>
void run_stage2(Be& be, const std::string& fixture, const std::string& variant, double out_tol, double grad_tol) {
  CAPTURE(fixture);
  CAPTURE(variant);
  const auto dir = fixtures / fixture;
  auto m = load_blip2_opt<T>(dir);
  const auto inputs = safetensors_file::open(dir / ("inputs" + variant + ".safetensors"));
  const auto expected = safetensors_file::open(dir / ("expected" + variant + ".safetensors"));
  const auto img = inputs.load_dynamic<T>("image_embeds");
  const auto ids = inputs.load_i64<2>("input_ids");
  const auto mask = inputs.load_i64<2>("attention_mask");
  const auto labels = inputs.load_i64<2>("labels");
  const index_t B = ids.extent(0), Tn = ids.extent(1), V = m.llm.config().vocab_size;
  stage2_state<T> st;
  m.zero_grad(be);
  const T loss = stage2_forward(be, m, st, tensor_view<const T, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]}),
                                ids.view(), mask.view(), labels.view());
  stage2_backward(be, m, st);
  const double want_loss = expected.load_dynamic<double>("loss_lm").data[0];
  CHECK(std::abs(static_cast<double>(loss) - want_loss) <= out_tol * std::max(1.0, std::abs(want_loss)));
  // logits (B, T, V) against the sequence-major rows t B + b
  MESSAGE(fixture, variant, ": loss ", static_cast<double>(loss), " (want ", want_loss, ")");
  const auto want_logits = expected.load_dynamic<double>("logits");
  REQUIRE(want_logits.shape == std::vector<index_t>({B, Tn, V}));
  const auto lg = st.logits();
  double scale = 0, err = 0;
  for (double x : want_logits.data) scale = std::max(scale, std::abs(x));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t v = 0; v < V; ++v)
        err = std::max(err, std::abs(static_cast<double>(lg(t * B + b, v)) -
                                     want_logits.data[static_cast<std::size_t>((b * Tn + t) * V + v)]));
  CHECK(err <= out_tol * scale);
  // every trainable gradient, and nothing for the frozen parts
  std::vector<std::pair<std::string, tensor_view<const T, 1>>> grads;
  for_each_parameter(m.qformer.config(), m.qformer.g, [&](const std::string& name, auto& v) {
    grads.emplace_back("grad." + name, tensor_view<const T, 1>(v.data(), {v.size()}));
  });
  grads.emplace_back("grad.language_projection.weight",
                     tensor_view<const T, 1>(m.projection.g.weight.data(), {m.projection.g.weight.size()}));
  grads.emplace_back("grad.language_projection.bias",
                     tensor_view<const T, 1>(m.projection.g.bias.data(), {m.projection.g.bias.size()}));
  index_t expected_grads = 0;
  double floor = 0;
  for (const auto& name : expected.names())
    if (name.rfind("grad.", 0) == 0) {
      ++expected_grads;
      const auto g = expected.load_dynamic<double>(name);
      for (double x : g.data) floor = std::max(floor, std::abs(x));
      CHECK_MESSAGE(name.find("language_model") == std::string::npos, name);
      CHECK_MESSAGE(name.find("vision_model") == std::string::npos, name);
    }
  if (variant == "_left" && expected_grads == 0) return;  // the left-padded fixtures hold outputs only
  CHECK(expected_grads == static_cast<index_t>(grads.size()));
  floor *= 1e-3;
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, got] : grads) {
    REQUIRE_MESSAGE(expected.contains(name), name);
    const auto want = expected.load_dynamic<double>(name);
    REQUIRE(static_cast<index_t>(want.data.size()) == got.size());
    double ref = floor, diff = 0;
    for (double x : want.data) ref = std::max(ref, std::abs(x));
    for (index_t k = 0; k < got.size(); ++k)
      diff = std::max(diff, std::abs(static_cast<double>(got(k)) - want.data[static_cast<std::size_t>(k)]));
    if (diff / ref > worst) worst = diff / ref, worst_name = name;
  }
  CAPTURE(worst_name);
  CHECK(worst <= grad_tol);
  MESSAGE(fixture, variant, ": logits err/scale ", err / scale, ", worst gradient err/ref ", worst, " (", worst_name, ")");
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// Every run of generation.json through blip2_opt_generate: ids and EOS flags identical, scores close.
// With bf16 (the decoder's matrices stored in bfloat16) nothing is asserted: the number of sequences
// equal to the float64 reference's is returned.
template <class T, class Be>
int run_generation(Be& be, bool bf16 = false) {
  const auto dir = fixtures / "stage2_opt";
  auto m = load_blip2_opt<T>(dir);
  if (bf16) m.llm.store_bfloat16(false);
  int same = 0;
  const auto inputs = safetensors_file::open(dir / "inputs.safetensors");
  const auto img = inputs.load_dynamic<T>("image_embeds");
  const auto g = read_json(dir / "generation.json");
  int sequences = 0;
  for (const auto& run : g["runs"]) {
    CAPTURE(run["name"].get<std::string>());
    const auto prompt = run["prompt_ids"].get<std::vector<index_t>>();
    generation_options o;
    o.num_beams = run["num_beams"];
    o.max_new_tokens = run["max_new_tokens"];
    o.min_new_tokens = run["min_new_tokens"];
    o.length_penalty = run["length_penalty"];
    o.repetition_penalty = run["repetition_penalty"];
    o.eos_token_id = g["eos_token_id"];
    o.pad_token_id = g["pad_token_id"];
    const auto out = blip2_opt_generate(be, m, tensor_view<const T, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]}),
                                        std::span<const index_t>(prompt), o);
    REQUIRE(out.size() == run["results"].size());
    for (std::size_t i = 0; i < out.size(); ++i) {
      const auto& want = run["results"][i];
      ++sequences;
      if (bf16) {
        same += out[i].ids == want["ids"].get<std::vector<std::int32_t>>();
        continue;
      }
      CHECK(out[i].ids == want["ids"].get<std::vector<std::int32_t>>());
      CHECK(out[i].ended_with_eos == want["eos"].get<bool>());
      const double ws = want["score"];
      CHECK(std::abs(out[i].score - ws) <= 1e-5 * std::max(1.0, std::abs(ws)));
    }
  }
  CHECK(sequences >= 15);
  return bf16 ? same : sequences;
}

// The logits of stage2_opt's batch with the decoder's matrices in bfloat16 against float32, as the
// largest difference over the largest float32 logit.
template <class Be>
double bf16_logits_error(Be& be) {
  const auto dir = fixtures / "stage2_opt";
  const auto inputs = safetensors_file::open(dir / "inputs.safetensors");
  const auto img = inputs.load_dynamic<float>("image_embeds");
  const auto ids = inputs.load_i64<2>("input_ids");
  const auto mask = inputs.load_i64<2>("attention_mask");
  const auto labels = inputs.load_i64<2>("labels");
  std::vector<float> logits[2];
  for (int bf16 = 0; bf16 < 2; ++bf16) {
    auto m = load_blip2_opt<float>(dir);
    if (bf16) m.llm.store_bfloat16(false);
    stage2_state<float> st;
    stage2_forward(be, m, st, tensor_view<const float, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]}),
                   ids.view(), mask.view(), labels.view());
    const auto lg = st.logits();
    logits[bf16].assign(lg.data(), lg.data() + lg.size());
    if (bf16) CHECK_THROWS_WITH_AS(stage2_backward(be, m, st), doctest::Contains("backward needs the float weights"),
                                   value_error);
  }
  double err = 0, scale = 0;
  for (std::size_t k = 0; k < logits[0].size(); ++k) {
    err = std::max(err, static_cast<double>(std::abs(logits[0][k] - logits[1][k])));
    scale = std::max(scale, static_cast<double>(std::abs(logits[0][k])));
  }
  return err / scale;
}

}  // namespace

TEST_CASE("the checkpoint's tokenizer gives the fixture's prompt ids; the end marker is the id of \"\\n\"") {
  const auto dir = fixtures / "stage2_opt";
  const auto tok = io::load_opt_tokenizer(dir);
  const auto t = read_json(dir / "tokens.json");
  for (const auto& [text, ids] : t["prompt_ids"].items()) {
    CAPTURE(text);
    const auto got = tok.encode(text);
    CHECK(std::vector<index_t>(got.begin(), got.end()) == ids.get<std::vector<index_t>>());
  }
  CHECK(tok.token_id("\n") == t["newline_id"].get<index_t>());
  CHECK(tok.pad_id() == std::optional<std::int64_t>(t["pad_id"].get<index_t>()));
}

TEST_CASE("generation matches the float64 Hugging Face reference: greedy, beam search, repetition penalty") {
  reference_backend ref;
  run_generation<float>(ref);
  run_generation<double>(ref);
#if BLIP2_HAS_ONEDNN
  onednn_backend dnnl;
  run_generation<float>(dnnl);
#endif
}

TEST_CASE("bfloat16 decoder weights: logits against float32's, and how many generated sequences stay the same") {
  reference_backend ref;
  const double err = bf16_logits_error(ref);
  const int same = run_generation<float>(ref, true);
  MESSAGE("bfloat16 decoder weights (reference backend): logits differ by ", err, " of the largest logit; ", same,
          " of 15 generated sequences equal float64's");
  // bf16 keeps 8 significant bits: each weight moves by up to 2^-9 relative, a dot product of K terms by

  // scale. 2% separates that from a wrong matrix (O(1)).
  CHECK(err <= 2e-2);
  CHECK(err > 0);  // the bf16 path did run
#if BLIP2_HAS_ONEDNN
  onednn_backend dnnl;
  const double err_dnnl = bf16_logits_error(dnnl);
  MESSAGE("oneDNN backend, our bf16 kernel: logits differ by ", err_dnnl, " of the largest logit");
  CHECK(err_dnnl <= 2e-2);
  CHECK(err_dnnl > 0);
#endif
}

TEST_CASE("stage 2 matches PyTorch: loss, logits, trainable gradients (reference backend, float and double)") {
  reference_backend be;
  for (const char* fixture : {"stage2_opt", "stage2_opt_postln"})
    for (const char* variant : {"", "_left"}) {
      run_stage2<float>(be, fixture, variant, 1e-4, 1e-3);
      run_stage2<double>(be, fixture, variant, 2e-6, 2e-6);
    }
}

#if BLIP2_HAS_ONEDNN
TEST_CASE("stage 2 matches PyTorch on the oneDNN backend") {
  onednn_backend be;
  for (const char* fixture : {"stage2_opt", "stage2_opt_postln"})
    for (const char* variant : {"", "_left"}) run_stage2<float>(be, fixture, variant, 1e-4, 1e-3);
}
#endif
