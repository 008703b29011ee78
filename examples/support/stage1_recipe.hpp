// examples/support/stage1_recipe.hpp: the stage-1 recipe of the demos: a small Q-Former trained from
// scratch with ITC + ITM + ITG over the frozen patch encoder on the synthetic world, with AdamW, warm-up +
// cosine, clipping and the temperature floor. stage1_demo runs it alone (then retrieval); blip2_demo runs
// it as BLIP-2's first stage before stage 2. Why each default is what it is: the comment at the top of
// examples/stage1_demo.cpp.
//
//   stage1_recipe r;                                  // the defaults
//   parse_stage1_flag(flag, reader, r);               // the recipe's command-line flags (usage_text below)
//   finish_stage1_recipe(r);                          // checks, folds the per-objective weights in
//   qformer_model<float> m(demo_qformer_config(r, encoder.dim()));
//   initialise_qformer(m, seed, r.temp, r);
//   train_stage1(be, r, world, encoder, m, seed, on_step);
//
// Demo support, not part of the installed library (namespace blip2::demo).
#pragma once
#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "blip2/dist/average_gradients.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/mining/hardest_sampler.hpp"
#include "blip2/mining/uniform_sampler.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"
#include "blip2/train/stage1_step.hpp"

#include "frozen_patch_encoder.hpp"
#include "synthetic_shapes.hpp"

namespace blip2::demo {

struct stage1_recipe {
  stage1_loss_weights weights{1, 1, 1};
  std::string objectives = "itc,itm,itg";
  index_t steps = 3000, batch = 48;
  // model
  index_t hidden = 64, layers = 2, heads = 4, ffn = 128, queries = 4, proj = 64, cross_every = 1;
  // temp is clamped to >= temp_min after every update. 0.001 is the floor of the [0.001, 0.5] clamp that
  // ALBEF and BLIP apply to their learnable temperature; with no floor (--temp-min 0) the default run on an
  // AVX-512 machine drove temp to 0 and stopped (README, "Known problem").
  double temp = 0.07, temp_min = 0.001;
  // optimiser
  double lr = 2e-3, min_lr = 1e-5, wd = 0.05, clip = 1.0;
  index_t warmup = 30;
  // objectives
  double itc_smoothing = 0.0, itg_smoothing = 0.1, itm_weight = 2, itg_weight = 3;
  index_t itm_start = 0;          // ITM is off before this step
  index_t itm_every = 2;          // ITM runs on every K-th step only (its joint pass over 3B pairs is the costliest part)
  std::string sampler = "blip2";  // blip2 | uniform | hardest
  index_t uniform_steps = 500;     // uniform ITM negatives before this step, then `sampler`
  // data
  double swap_pairs = 1.0, jitter = 0.0, noise = 0.0;
  bool pixels = false;            // encoder on raw pixels instead of form + colour
  double position_scale = 1.0;    // the encoder's position embedding scale
  std::string activation = "gelu";  // the encoder's activation: none | relu | gelu | tanh
  index_t patch = 8, enc_dim = 256;
  bool global_token = false;
  double init = 0.05, pos_init = 0.02, word_init = 0.02, query_init = 0.02;  // N(0, std) initialisation
};

// The recipe's flags, for a program's usage text.
inline constexpr const char* stage1_recipe_usage =
    "  stage 1:   [--objectives itc|itc,itm|itc,itm,itg] [--steps N] [--batch B]\n"
    "  model:     [--hidden C] [--layers L] [--heads H] [--ffn F] [--queries Q] [--proj D] [--cross-every K]\n"
    "             [--temp T] [--temp-min T] [--init STD] [--pos-init STD] [--word-init STD] [--query-init STD]\n"
    "  optimiser: [--lr X] [--min-lr X] [--warmup N] [--wd X] [--clip X]\n"
    "  losses:    [--itc-smoothing X] [--itg-smoothing X] [--itm-weight W] [--itg-weight W] [--itm-start STEP]\n"
    "             [--itm-every K] [--sampler blip2|uniform|hardest] [--uniform-steps N]\n"
    "  data:      [--swap-pairs P] [--jitter PX] [--noise X]\n"
    "  encoder:   [--pixels] [--enc-dim E] [--patch P] [--activation none|relu|gelu|tanh] [--position-scale X]\n"
    "             [--global-token]\n";

// Reads the recipe flag `a` through r (r.integer(index_t&), r.real(double&), r.value() -> std::string and
// r.fail(message), which must not return); false when `a` is not a recipe flag.
template <class Reader>
bool parse_stage1_flag(std::string_view a, Reader& r, stage1_recipe& o) {
  if (a == "--objectives") {
    o.objectives = r.value();
    o.weights = {0, 0, 0};
    for (std::string_view s : {"itc", "itm", "itg"})
      if (o.objectives.find(s) != std::string::npos) (s == "itc" ? o.weights.itc : s == "itm" ? o.weights.itm : o.weights.itg) = 1;
    if (o.weights.itc == 0) r.fail("--objectives must include itc (retrieval ranks by ITC)");
  } else if (a == "--steps") r.integer(o.steps);
  else if (a == "--batch") r.integer(o.batch);
  else if (a == "--hidden") r.integer(o.hidden);
  else if (a == "--layers") r.integer(o.layers);
  else if (a == "--heads") r.integer(o.heads);
  else if (a == "--ffn") r.integer(o.ffn);
  else if (a == "--queries") r.integer(o.queries);
  else if (a == "--proj") r.integer(o.proj);
  else if (a == "--cross-every") r.integer(o.cross_every);
  else if (a == "--temp") r.real(o.temp);
  else if (a == "--temp-min") r.real(o.temp_min);
  else if (a == "--lr") r.real(o.lr);
  else if (a == "--min-lr") r.real(o.min_lr);
  else if (a == "--warmup") r.integer(o.warmup);
  else if (a == "--wd") r.real(o.wd);
  else if (a == "--clip") r.real(o.clip);
  else if (a == "--itc-smoothing") r.real(o.itc_smoothing);
  else if (a == "--itg-smoothing") r.real(o.itg_smoothing);
  else if (a == "--itm-weight") r.real(o.itm_weight);
  else if (a == "--itg-weight") r.real(o.itg_weight);
  else if (a == "--itm-start") r.integer(o.itm_start);
  else if (a == "--itm-every") r.integer(o.itm_every);
  else if (a == "--sampler") {
    o.sampler = r.value();
    if (o.sampler != "blip2" && o.sampler != "uniform" && o.sampler != "hardest") r.fail("--sampler must be blip2, uniform or hardest");
  } else if (a == "--uniform-steps") r.integer(o.uniform_steps);
  else if (a == "--swap-pairs") r.real(o.swap_pairs);
  else if (a == "--jitter") r.real(o.jitter);
  else if (a == "--noise") r.real(o.noise);
  else if (a == "--pixels") o.pixels = true;
  else if (a == "--position-scale") r.real(o.position_scale);
  else if (a == "--activation") {
    o.activation = r.value();
    if (o.activation != "none" && o.activation != "relu" && o.activation != "gelu" && o.activation != "tanh")
      r.fail("--activation must be none, relu, gelu or tanh");
  }
  else if (a == "--patch") r.integer(o.patch);
  else if (a == "--enc-dim") r.integer(o.enc_dim);
  else if (a == "--global-token") o.global_token = true;
  else if (a == "--init") r.real(o.init);
  else if (a == "--pos-init") r.real(o.pos_init);
  else if (a == "--word-init") r.real(o.word_init);
  else if (a == "--query-init") r.real(o.query_init);
  else return false;
  return true;
}

// Checks the recipe (r.fail on a value out of range) and folds the ITM / ITG weights into o.weights.
template <class Reader>
void finish_stage1_recipe(Reader& r, stage1_recipe& o) {
  if (o.steps < 1 || o.batch < 2) r.fail("--steps must be >= 1 and --batch >= 2");
  if (o.hidden < 1 || o.layers < 1 || o.heads < 1 || o.hidden % o.heads != 0 || o.ffn < 1 || o.queries < 1 || o.proj < 1 ||
      o.cross_every < 1)
    r.fail("model sizes out of range (hidden must be a multiple of heads)");
  if (!(o.temp > 0) || !(o.lr > 0) || o.min_lr < 0 || o.wd < 0 || !(o.clip > 0) || o.warmup < 0) r.fail("optimiser settings out of range");
  if (o.swap_pairs < 0 || o.swap_pairs > 1) r.fail("--swap-pairs must be in [0, 1]");
  o.weights.itm *= o.itm_weight;
  o.weights.itg *= o.itg_weight;
}

// The synthetic world and the frozen encoder the recipe trains on.
inline synthetic::shapes_config world_config(const stage1_recipe& o) {
  synthetic::shapes_config wc;
  wc.swap_pairs = static_cast<float>(o.swap_pairs);
  wc.jitter = static_cast<float>(o.jitter);
  wc.noise = static_cast<float>(o.noise);
  return wc;
}
inline patch_encoder_config encoder_config(const stage1_recipe& o) {
  patch_encoder_config ec;
  if (o.pixels) ec.features = patch_features::pixels;
  ec.position_scale = static_cast<float>(o.position_scale);
  ec.activation = o.activation == "none" ? patch_activation::none : o.activation == "relu" ? patch_activation::relu
                  : o.activation == "tanh" ? patch_activation::tanh : patch_activation::gelu;
  ec.patch = o.patch;
  ec.dim = o.enc_dim;
  ec.global_token = o.global_token;
  return ec;
}

// The Q-Former of the demo: BLIP-2's architecture at a size two CPU cores train in a minute.
inline qformer_model_config demo_qformer_config(const stage1_recipe& o, index_t image_width) {
  qformer_model_config c;
  auto& q = c.qformer;
  q.vocab_size = synthetic::vocab_size;
  q.hidden_size = o.hidden;
  q.num_hidden_layers = o.layers;
  q.num_attention_heads = o.heads;
  q.intermediate_size = o.ffn;
  q.max_position_embeddings = synthetic::max_caption_len;
  q.cross_attention_frequency = o.cross_every;
  q.encoder_hidden_size = image_width;
  q.hidden_dropout_prob = 0.0;
  q.attention_probs_dropout_prob = 0.0;
  q.pad_token_id = synthetic::pad_id;
  q.bos_token_id = synthetic::dec_id;
  c.num_query_tokens = o.queries;
  c.image_text_hidden_size = o.proj;
  c.with_text = true;
  c.with_stage1_heads = true;
  return c;
}

// BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm (1, 0); temp 0.07 as BLIP-2.
inline void initialise_qformer(qformer_model<float>& m, std::uint64_t seed, float temp, const stage1_recipe& o) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  for_each_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const bool norm = name.find("LayerNorm") != std::string::npos || name.find("layernorm") != std::string::npos;
    const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const double scale = name == "embeddings.position_embeddings.weight" ? o.pos_init
                         : name == "embeddings.word_embeddings.weight"   ? o.word_init
                         : name == "query_tokens"                         ? o.query_init
                                                                          : o.init;
    for (index_t k = 0; k < v.size(); ++k)
      v.data()[k] = norm ? (bias ? 0.0f : 1.0f) : bias ? 0.0f : static_cast<float>(scale) * unit(gen);
  });
  m.w.temp.data()[0] = temp;
}

// The frozen encoder's features of each training scene, computed the first time the scene is drawn.
// Without position jitter and pixel noise a scene always renders to the same image, and the encoder is
// frozen, so its features never change (as BLIP-2's image features may be precomputed once its ViT is
// frozen); the demo then spends no time encoding after its first few hundred steps. With jitter or
// noise every draw is encoded.
class feature_cache {
 public:
  feature_cache(const synthetic::shapes_world& world, const frozen_patch_encoder& enc, bool enabled)
      : world_(world), enc_(enc), enabled_(enabled), row_(enc.num_tokens() * enc.dim()) {}

  // embeds (B, N, E) = the encoder's features of images (B, H, H, 3), which show scenes (B)
  void encode(tensor_view<const float, 4> images, std::span<const synthetic::scene> scenes, tensor_view<float, 3> embeds) {
    if (!enabled_) return enc_.encode(images, embeds);
    const index_t B = images.extent(0), H = images.extent(1), C = images.extent(3);
    std::vector<index_t> missing;
    for (index_t b = 0; b < B; ++b)
      if (!slots_.count(world_.scene_index(scenes[static_cast<std::size_t>(b)]))) missing.push_back(b);
    if (!missing.empty()) {  // encode the new scenes as one batch, keep their rows
      const index_t M = static_cast<index_t>(missing.size());
      host_tensor<float, 4> imgs({M, H, H, C});
      host_tensor<float, 3> feats({M, enc_.num_tokens(), enc_.dim()});
      for (index_t m = 0; m < M; ++m)
        std::copy_n(images.data() + missing[static_cast<std::size_t>(m)] * H * H * C, H * H * C, imgs.data() + m * H * H * C);
      enc_.encode(::blip2::detail::as_const(imgs.view()), feats.view());
      for (index_t m = 0; m < M; ++m) {
        const auto key = world_.scene_index(scenes[static_cast<std::size_t>(missing[static_cast<std::size_t>(m)])]);
        if (slots_.emplace(key, static_cast<index_t>(rows_.size()) / row_).second)
          rows_.insert(rows_.end(), feats.data() + m * row_, feats.data() + (m + 1) * row_);
      }
    }
    for (index_t b = 0; b < B; ++b) {
      const index_t slot = slots_.at(world_.scene_index(scenes[static_cast<std::size_t>(b)]));
      std::copy_n(rows_.data() + slot * row_, row_, embeds.data() + b * row_);
    }
  }

 private:
  const synthetic::shapes_world& world_;
  const frozen_patch_encoder& enc_;
  bool enabled_;
  index_t row_;                                    // N E floats per scene
  std::unordered_map<std::int64_t, index_t> slots_;  // scene index -> its row in rows_
  std::vector<float> rows_;
};


// What one stage-1 step reports to the caller (for its CSV and progress bar).
struct stage1_step_report {
  index_t step = 0;  // 1-based: steps done
  stage1_losses losses;
  double lr = 0;
};

// Trains m with the recipe for o.steps steps of stream `seed`; on_step(report) after each update.
// Returns the mean losses over the last tenth of the steps (the world batch's).
// Over the W ranks of comm (data parallel), each step's batch of o.batch pairs is the same world batch as
// in one process, split in contiguous shards (rank r draws pairs [r o.batch/W, (r+1) o.batch/W) of the
// step); the step sees the world batch (train/stage1_step.hpp) and the gradients are averaged before
// clipping, so every rank makes the same update (m must start equal on every rank: the same seed).
template <class Be, class Comm, class OnStep>
stage1_losses train_stage1(Be& be, Comm& comm, const stage1_recipe& o, const synthetic::shapes_world& world,
                           const frozen_patch_encoder& encoder, qformer_model<float>& m, std::uint64_t seed, OnStep&& on_step) {
  const index_t W = comm.size(), Bl = o.batch / W;
  BLIP2_CHECK(o.batch % W == 0, value_error, "train_stage1: --batch ", o.batch, " cannot be shared evenly by ", W,
              " ranks; give a batch divisible by ", W);
  adamw_options ao;
  ao.weight_decay = o.wd;
  auto optim = make_adamw(m, ao);
  warmup_cosine_schedule lr{.base_lr = o.lr, .min_lr = o.min_lr, .warmup_start_lr = std::min(o.min_lr, o.lr),
                            .warmup_steps = std::min<index_t>(o.warmup, o.steps / 5), .total_steps = o.steps};
  const index_t H = world.config().image_size, T = world.num_tokens(), N = encoder.num_tokens(), E = encoder.dim();
  host_tensor<float, 4> images({Bl, H, H, 3});
  host_tensor<index_t, 2> ids({Bl, T}), mask({Bl, T});
  host_tensor<float, 3> embeds({Bl, N, E});
  std::vector<synthetic::scene> scenes(static_cast<std::size_t>(Bl));
  feature_cache features(world, encoder, o.jitter == 0 && o.noise == 0);
  stage1_state<float> st;
  blip2_sampler sampler;
  uniform_sampler uniform;
  hardest_sampler hardest;
  stage1_options so;
  so.itc_label_smoothing = o.itc_smoothing;
  so.itg_label_smoothing = o.itg_smoothing;
  stage1_losses last{}, tail{};  // tail: the mean over the last tenth of the steps
  const index_t tail_from = o.steps - std::max<index_t>(1, o.steps / 10);
  for (index_t step = 0; step < o.steps; ++step) {
    world.train_batch(seed, static_cast<std::uint64_t>(step * o.batch + comm.rank() * Bl), images.view(), ids.view(),
                      mask.view(), scenes);
    features.encode(::blip2::detail::as_const(images.view()), scenes, embeds.view());
    so.seed = seed * 1000003u + static_cast<std::uint64_t>(step);
    stage1_batch<float> batch{::blip2::detail::as_const(embeds.view()), ::blip2::detail::as_const(ids.view()),
                              ::blip2::detail::as_const(mask.view()), {}};
    m.zero_grad();
    so.weights = o.weights;
    if (step < o.itm_start || (step - o.itm_start) % std::max<index_t>(1, o.itm_every) != 0) so.weights.itm = 0;
    if (so.weights.itm != 0 && (step < o.uniform_steps || o.sampler == "uniform"))
      last = stage1_step(be, comm, m, st, batch, uniform, so);
    else if (so.weights.itm != 0 && o.sampler == "hardest")
      last = stage1_step(be, comm, m, st, batch, hardest, so);
    else
      last = stage1_step(be, comm, m, st, batch, sampler, so);
    average_gradients(comm, m.gradients());
    clip_grad_norm(m.gradients(), o.clip);
    if (step >= tail_from) {
      const double n = static_cast<double>(o.steps - tail_from);
      tail.itc += last.itc / n, tail.itm += last.itm / n, tail.itg += last.itg / n, tail.total += last.total / n;
    }
    const double rate = lr(step);
    optim.step(m.parameters(), m.gradients(), rate);
    if (m.w.temp.data()[0] < o.temp_min) m.w.temp.data()[0] = static_cast<float>(o.temp_min);
    on_step(stage1_step_report{step + 1, last, rate});
  }
  return tail;
}

// One process.
template <class Be, class OnStep>
stage1_losses train_stage1(Be& be, const stage1_recipe& o, const synthetic::shapes_world& world,
                           const frozen_patch_encoder& encoder, qformer_model<float>& m, std::uint64_t seed, OnStep&& on_step) {
  single_process_communicator one;
  return train_stage1(be, one, o, world, encoder, m, seed, std::forward<OnStep>(on_step));
}

}  // namespace blip2::demo
