// test_training_checkpoint: save and resume training (io/training_checkpoint.hpp).
//
// The resume test trains a tiny Q-Former (float and double) with synthetic deterministic gradients
// (g = p - target + noise drawn from the counter-based RNG), gradient clipping, AdamW and the warm-up +
// cosine schedule; it saves at step k, loads into a fresh model and optimiser, continues, and requires
// the parameters, the moments and the step count after N steps to be BITWISE those of the
// uninterrupted run. Then one test per way a checkpoint can be refused, each checking the message names
// what differs, and that a refused load leaves the model and optimiser untouched.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "blip2/core/rng.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/training_checkpoint.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"
#include "harness/temp_dir.hpp"

using blip2::testing::temp_dir;
namespace fs = std::filesystem;
using blip2::index_t;

namespace {

const fs::path& tmp() {
  static temp_dir d;
  return d.path;
}

blip2::qformer_model_config tiny_config() {
  blip2::qformer_model_config c;
  c.qformer.vocab_size = 11;
  c.qformer.hidden_size = 8;
  c.qformer.num_hidden_layers = 2;
  c.qformer.num_attention_heads = 2;
  c.qformer.intermediate_size = 12;
  c.qformer.cross_attention_frequency = 2;
  c.qformer.encoder_hidden_size = 6;
  c.qformer.max_position_embeddings = 7;
  c.num_query_tokens = 3;
  c.image_text_hidden_size = 4;
  c.with_text = true;
  c.with_stage1_heads = true;
  return c;
}

template <class T>
void init_params(blip2::qformer_model<T>& m, std::uint64_t seed) {
  auto p = m.parameters();
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<T>(0.5 * (2 * blip2::uniform_double(seed, i) - 1));
}

const blip2::warmup_cosine_schedule schedule{
    .base_lr = 0.05, .min_lr = 0.005, .warmup_start_lr = 0.001, .warmup_steps = 4, .total_steps = 20};

// Steps [from, to): g = p - target + noise(rng), clip to norm 1, AdamW with the schedule's lr.
template <class T>
void train(blip2::qformer_model<T>& m, blip2::adamw<T>& opt, std::int64_t from, std::int64_t to, blip2::rng_state& rng) {
  auto p = m.parameters();
  auto g = m.gradients();
  for (std::int64_t step = from; step < to; ++step) {
    m.zero_grad();
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double target = std::sin(0.01 * static_cast<double>(i));
      const double noise = 0.1 * (2 * blip2::uniform_double(rng.seed, rng.counter + i) - 1);
      g[i] += static_cast<T>(p[i] - target + noise);
    }
    rng.counter += p.size();
    const double norm = blip2::clip_grad_norm(g, 1.0);
    REQUIRE(std::isfinite(norm));
    opt.step(p, g, schedule(step));
  }
}

template <class T>
bool bitwise_equal(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
template <class T>
bool bitwise_equal(std::span<T> a, std::span<T> b) {
  return bitwise_equal(std::span<const T>(a), std::span<const T>(b));
}

template <class T>
void resume_is_bitwise(const char* file) {
  const auto cfg = tiny_config();
  const std::int64_t N = 12, k = 5;
  const fs::path path = tmp() / file;

  // uninterrupted
  blip2::qformer_model<T> a(cfg);
  init_params(a, 1);
  auto oa = blip2::make_adamw(a);
  blip2::rng_state ra{42, 0};
  train(a, oa, 0, N, ra);

  // interrupted at k
  blip2::rng_state rb{42, 0};
  {
    blip2::qformer_model<T> b(cfg);
    init_params(b, 1);
    auto ob = blip2::make_adamw(b);
    train(b, ob, 0, k, rb);
    blip2::save_training_checkpoint(path, b, ob, k, rb);
  }
  // a fresh process, as it were: other initial parameters, a new optimiser
  blip2::qformer_model<T> c(cfg);
  init_params(c, 999);
  auto oc = blip2::make_adamw(c);
  const auto st = blip2::load_training_checkpoint(path, c, oc);
  CHECK(st.step == k);
  CHECK(st.rng == rb);
  CHECK(oc.step_count() == k);
  blip2::rng_state rc = st.rng;
  train(c, oc, st.step, N, rc);

  CHECK(bitwise_equal(a.parameters(), c.parameters()));
  CHECK(bitwise_equal(oa.exp_avg(), oc.exp_avg()));
  CHECK(bitwise_equal(oa.exp_avg_sq(), oc.exp_avg_sq()));
  CHECK(oa.step_count() == oc.step_count());
  CHECK(ra == rc);
  // and the run moved: not a vacuous comparison
  blip2::qformer_model<T> init(cfg);
  init_params(init, 1);
  CHECK(!bitwise_equal(a.parameters(), init.parameters()));
}

// Copies a safetensors file, letting `edit` change the tensors and the metadata.
void rewrite(const fs::path& from, const fs::path& to,
             const std::function<void(std::vector<blip2::safetensors_entry>&, blip2::safetensors_metadata&)>& edit) {
  const auto f = blip2::safetensors_file::open(from);
  std::vector<blip2::safetensors_entry> entries;
  for (const auto& t : f.tensors()) {
    const auto b = f.bytes(t.name);
    entries.emplace_back(t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end()));
  }
  blip2::safetensors_metadata meta(f.metadata().begin(), f.metadata().end());
  edit(entries, meta);
  blip2::save_safetensors(to, entries, meta);
}

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}
void write_bytes(const fs::path& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A saved checkpoint of the tiny model after 3 steps, written once.
const fs::path& reference_checkpoint() {
  static const fs::path path = [] {
    const fs::path p = tmp() / "reference.safetensors";
    blip2::qformer_model<float> m(tiny_config());
    init_params(m, 5);
    auto o = blip2::make_adamw(m);
    blip2::rng_state r{7, 0};
    train(m, o, 0, 3, r);
    blip2::save_training_checkpoint(p, m, o, 3, r);
    return p;
  }();
  return path;
}

// Loading `path` into a fresh tiny model must throw E with `what` in the message, naming the file, and
// leave model and optimiser as they were.
template <class E>
void refused(const fs::path& path, const std::string& what, blip2::qformer_model_config cfg = tiny_config(),
             blip2::no_decay_rule rule = blip2::no_decay_rule::blip2) {
  blip2::qformer_model<float> m(cfg);
  init_params(m, 77);
  auto o = blip2::make_adamw(m, {}, rule);
  const std::vector<float> before(m.parameters().begin(), m.parameters().end());
  std::string message;
  try {
    blip2::load_training_checkpoint(path, m, o);
  } catch (const E& e) {
    message = e.what();
  }
  CAPTURE(message);
  CHECK(message.find(what) != std::string::npos);
  CHECK(message.find(path.string()) != std::string::npos);
  CHECK(std::equal(before.begin(), before.end(), m.parameters().begin()));
  CHECK(o.step_count() == 0);
  CHECK(std::all_of(o.exp_avg().begin(), o.exp_avg().end(), [](float x) { return x == 0; }));
}

}  // namespace

TEST_CASE("training checkpoint: a resumed run is bitwise identical to an uninterrupted one (float)") {
  resume_is_bitwise<float>("resume_f32.safetensors");
}

TEST_CASE("training checkpoint: a resumed run is bitwise identical to an uninterrupted one (double)") {
  resume_is_bitwise<double>("resume_f64.safetensors");
}

TEST_CASE("training checkpoint: contents, metadata, and the file loads as a model") {
  const auto& path = reference_checkpoint();
  const auto f = blip2::safetensors_file::open(path);
  const auto& meta = f.metadata();
  CHECK(meta.at("format") == "pt");
  CHECK(meta.at("blip2.kind") == "training_checkpoint");
  CHECK(meta.at("blip2.step") == "3");
  CHECK(meta.at("blip2.rng.seed") == "7");
  CHECK(meta.at("blip2.optimizer.step") == "3");
  CHECK(meta.at("blip2.optimizer.beta2") == "0.98");
  CHECK(meta.at("blip2.optimizer.weight_decay") == "0.05");
  CHECK(meta.at("blip2.optimizer.eps") == "1e-08");
  CHECK(meta.at("blip2.dtype") == "F32");
  CHECK(meta.at("blip2.fingerprint").size() == 16);
  CHECK(meta.at("blip2.config").find("num_hidden_layers=2;") != std::string::npos);
  CHECK(meta.at("blip2.optimizer.no_decay").find("query_tokens\n") != std::string::npos);
  CHECK(f.contains("query_tokens"));
  CHECK(f.contains("optimizer.exp_avg.query_tokens"));
  CHECK(f.contains("optimizer.exp_avg_sq.temp"));
  CHECK(f.info("optimizer.exp_avg_sq.temp").shape.empty());  // a 0-d tensor, like temp itself
  // 3 tensors per parameter, nothing else; no temporary file left beside it
  blip2::qformer_model<float> m(tiny_config());
  std::size_t params = 0;
  blip2::for_each_parameter(m.config(), m.w, [&](const std::string&, auto&) { ++params; });
  CHECK(f.size() == 3 * params);
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(path.parent_path()))
    if (e.path().filename().string().starts_with("reference.safetensors")) ++files;
  CHECK(files == 1);

  // It loads as a model, by Hugging Face name (the optimizer.* tensors are ignored).
  blip2::qformer_model<float> as_model(tiny_config());
  blip2::load_qformer_weights(as_model, f);
  blip2::qformer_model<float> resumed(tiny_config());
  auto o = blip2::make_adamw(resumed);
  blip2::load_training_checkpoint(path, resumed, o);
  CHECK(bitwise_equal(as_model.parameters(), resumed.parameters()));
  // the hyper-parameters come from the file, as in torch's load_state_dict
  auto o2 = blip2::make_adamw(resumed, {.beta1 = 0.5, .beta2 = 0.5, .eps = 1e-3, .weight_decay = 0.5});
  blip2::load_training_checkpoint(path, resumed, o2);
  CHECK(o2.options().beta1 == 0.9);
  CHECK(o2.options().beta2 == 0.98);
  CHECK(o2.options().eps == 1e-8);
  CHECK(o2.options().weight_decay == 0.05);
  // saving over an existing checkpoint replaces it
  blip2::save_training_checkpoint(tmp() / "copy.safetensors", resumed, o, 3, {7, 0});
  blip2::save_training_checkpoint(tmp() / "copy.safetensors", resumed, o, 4, {7, 1});
  CHECK(blip2::safetensors_file::open(tmp() / "copy.safetensors").metadata().at("blip2.step") == "4");
}

TEST_CASE("training checkpoint: another configuration is refused, naming what differs") {
  const auto& path = reference_checkpoint();
  auto three_layers = tiny_config();
  three_layers.qformer.num_hidden_layers = 3;
  refused<blip2::format_error>(path, "num_hidden_layers is 2 in the file but 3 in the model", three_layers);
  auto wider = tiny_config();
  wider.qformer.intermediate_size = 16;
  wider.num_query_tokens = 4;
  refused<blip2::format_error>(path, "intermediate_size is 12 in the file but 16 in the model", wider);
  refused<blip2::format_error>(path, "num_query_tokens is 3 in the file but 4 in the model", wider);
  auto no_heads = tiny_config();
  no_heads.with_stage1_heads = false;
  refused<blip2::format_error>(path, "with_stage1_heads is 1 in the file but 0 in the model", no_heads);

  // another dtype
  blip2::qformer_model<double> d(tiny_config());
  auto od = blip2::make_adamw(d);
  CHECK_THROWS_WITH_AS(blip2::load_training_checkpoint(path, d, od), doctest::Contains("dtype F32 but this model is F64"),
                       blip2::format_error);
  // another weight-decay mask (LAVIS's rule decays query_tokens)
  refused<blip2::value_error>(path, "parameter 'query_tokens' is not weight-decayed in the checkpoint but in this optimiser",
                              tiny_config(), blip2::no_decay_rule::lavis);
  // an optimiser of another size
  blip2::qformer_model<float> m(tiny_config());
  blip2::adamw<float> small(10);
  CHECK_THROWS_WITH_AS(blip2::load_training_checkpoint(path, m, small), doctest::Contains("the optimiser has 10 elements"),
                       blip2::value_error);
  CHECK_THROWS_WITH_AS(blip2::save_training_checkpoint(tmp() / "never.safetensors", m, small, 0, {}),
                       doctest::Contains("the optimiser has 10 elements"), blip2::value_error);
  CHECK(!fs::exists(tmp() / "never.safetensors"));
}

TEST_CASE("training checkpoint: missing, reshaped, retyped or unexpected tensors; edited metadata") {
  const auto& src = reference_checkpoint();
  const fs::path p = tmp() / "edited.safetensors";
  auto drop = [](std::vector<blip2::safetensors_entry>& es, const std::string& name) {
    std::erase_if(es, [&](const blip2::safetensors_entry& e) { return e.name() == name; });
  };
  auto replace = [](std::vector<blip2::safetensors_entry>& es, blip2::safetensors_entry e) {
    for (auto& x : es)
      if (x.name() == e.name()) x = std::move(e);
  };

  rewrite(src, p, [&](auto& es, auto&) { drop(es, "optimizer.exp_avg_sq.temp"); });
  refused<blip2::format_error>(p, "missing tensor 'optimizer.exp_avg_sq.temp'");
  rewrite(src, p, [&](auto& es, auto&) { drop(es, "qformer.encoder.layer.1.output_query.dense.weight"); });
  refused<blip2::format_error>(p, "missing tensor 'qformer.encoder.layer.1.output_query.dense.weight' (expected shape (8, 12))");

  rewrite(src, p, [&](auto& es, auto&) {
    replace(es, blip2::safetensors_entry("optimizer.exp_avg.query_tokens", blip2::safetensors_dtype::f32, {3, 8},
                                         std::vector<std::byte>(3 * 8 * 4)));
  });
  refused<blip2::shape_error>(p, "tensor 'optimizer.exp_avg.query_tokens' has shape (3, 8) but the model's is (1, 3, 8)");

  rewrite(src, p, [&](auto& es, auto&) {
    replace(es, blip2::safetensors_entry("itm_head.bias", blip2::safetensors_dtype::f64, {2}, std::vector<std::byte>(16)));
  });
  refused<blip2::format_error>(p, "tensor 'itm_head.bias' has dtype F64 but the model's is F32");

  rewrite(src, p, [&](auto& es, auto&) {
    es.emplace_back("optimizer.momentum_buffer.temp", blip2::safetensors_dtype::f32, std::vector<index_t>{},
                    std::vector<std::byte>(4));
  });
  refused<blip2::format_error>(p, "unexpected tensor 'optimizer.momentum_buffer.temp'");

  rewrite(src, p, [&](auto&, auto& meta) { meta["blip2.fingerprint"] = "0123456789abcdef"; });
  refused<blip2::format_error>(p, "fingerprint 0123456789abcdef differs from the model's");

  rewrite(src, p, [&](auto&, auto& meta) { meta["blip2.step"] = "three"; });
  refused<blip2::format_error>(p, "__metadata__ 'blip2.step' = \"three\" is not an integer");
  rewrite(src, p, [&](auto&, auto& meta) { meta["blip2.rng.counter"] = "-1"; });
  refused<blip2::format_error>(p, "'blip2.rng.counter' = \"-1\" is not an integer in range");
  rewrite(src, p, [&](auto&, auto& meta) { meta["blip2.optimizer.beta2"] = "1.5"; });
  refused<blip2::format_error>(p, "betas (0.9, 1.5) must be in [0, 1)");
  rewrite(src, p, [&](auto&, auto& meta) { meta.erase("blip2.rng.seed"); });
  refused<blip2::format_error>(p, "no __metadata__ entry 'blip2.rng.seed'");
  rewrite(src, p, [&](auto&, auto& meta) { meta["blip2.version"] = "2"; });
  refused<blip2::format_error>(p, "version \"2\" is not supported");

  // a model file, not a training checkpoint
  blip2::qformer_model<float> m(tiny_config());
  blip2::save_safetensors(p, blip2::qformer_entries(m));
  refused<blip2::format_error>(p, "no __metadata__ entry 'blip2.kind' (not a blip2 training checkpoint)");
}

TEST_CASE("training checkpoint: a truncated or corrupted file is a format_error naming the file") {
  const auto bytes = read_bytes(reference_checkpoint());
  const fs::path p = tmp() / "broken.safetensors";
  write_bytes(p, std::span(bytes).first(bytes.size() - 100));
  refused<blip2::format_error>(p, "safetensors '");
  write_bytes(p, std::span(bytes).first(5));
  refused<blip2::format_error>(p, "safetensors '");
  auto corrupt = bytes;
  corrupt[8] = std::byte{'['};  // the header's opening brace
  write_bytes(p, corrupt);
  refused<blip2::format_error>(p, "safetensors '");
  CHECK_THROWS_AS(
      [] {
        blip2::qformer_model<float> m(tiny_config());
        auto o = blip2::make_adamw(m);
        blip2::load_training_checkpoint(tmp() / "does_not_exist.safetensors", m, o);
      }(),
      blip2::format_error);
}
