// stage1_demo: BLIP-2 stage-1 pre-training in miniature, then zero-shot retrieval.
//
// What it teaches: how the pieces of stage 1 fit together. A Q-Former is trained from scratch with the
// three objectives (ITC, ITM with hard negatives, ITG) over a frozen image encoder on synthetic scenes
// (two coloured shapes and their relation, captioned), with AdamW, warm-up + cosine and gradient clipping;
// then it ranks 1,000 held-out image-caption pairs whose captions are all different, among them
// attribute-swapped distractors (the same shapes with colours, positions or sizes exchanged), by ITC, and
// re-ranks the ITC top-k by mean ITM logit + ITC as BLIP-2's evaluation does.
//
//   stage1_demo [--objectives itc|itc,itm|itc,itm,itg] [--steps N] [--batch B] [--eval N] [--rerank-k K]
//               [--out DIR] [--seed S] [--backend onednn|reference]
//
// It writes DIR/losses.csv (losses and learning rate per step) and DIR/losses.png, prints R@1/R@5 both
// ways next to chance, and ends with one JSON line.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/eval/retrieval.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"
#include "blip2/train/csv_log.hpp"
#include "blip2/train/frozen_patch_encoder.hpp"
#include "blip2/train/plot_png.hpp"
#include "blip2/train/progress.hpp"
#include "blip2/train/stage1_step.hpp"
#include "blip2/train/synthetic_shapes.hpp"

using namespace blip2;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  stage1_loss_weights weights{1, 1, 1};
  std::string objectives = "itc,itm,itg";
  index_t steps = 300, batch = 48, eval = 1000, rerank_k = 16;
  std::string out = "stage1_demo_out";
  std::uint64_t seed = 1;
  bool onednn = true;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "stage1_demo: %s\nusage: stage1_demo [--objectives itc|itc,itm|itc,itm,itg] [--steps N] "
               "[--batch B] [--eval N] [--rerank-k K] [--out DIR] [--seed S] [--backend onednn|reference]\n", why);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--objectives") {
      o.objectives = value();
      o.weights = {0, 0, 0};
      for (std::string_view s : {"itc", "itm", "itg"})
        if (o.objectives.find(s) != std::string::npos) (s == "itc" ? o.weights.itc : s == "itm" ? o.weights.itm : o.weights.itg) = 1;
      if (o.weights.itc == 0) usage("--objectives must include itc (retrieval ranks by ITC)");
    } else if (a == "--steps") o.steps = std::stoll(value());
    else if (a == "--batch") o.batch = std::stoll(value());
    else if (a == "--eval") o.eval = std::stoll(value());
    else if (a == "--rerank-k") o.rerank_k = std::stoll(value());
    else if (a == "--out") o.out = value();
    else if (a == "--seed") o.seed = std::stoull(value());
    else if (a == "--backend") {
      const auto b = value();
      if (b != "onednn" && b != "reference") usage("--backend must be onednn or reference");
      o.onednn = b == "onednn";
    } else usage(("unknown argument " + a).c_str());
  }
  if (o.steps < 1 || o.batch < 2 || o.eval < 10 || o.rerank_k < 1) usage("sizes out of range");
  return o;
}

// The Q-Former of the demo: BLIP-2's architecture at a size two CPU cores train in a minute.
qformer_model_config demo_config(index_t image_width) {
  qformer_model_config c;
  auto& q = c.qformer;
  q.vocab_size = synthetic::vocab_size;
  q.hidden_size = 128;
  q.num_hidden_layers = 2;
  q.num_attention_heads = 4;
  q.intermediate_size = 256;
  q.max_position_embeddings = synthetic::max_caption_len;
  q.cross_attention_frequency = 1;
  q.encoder_hidden_size = image_width;
  q.hidden_dropout_prob = 0.0;
  q.attention_probs_dropout_prob = 0.0;
  q.pad_token_id = synthetic::pad_id;
  q.bos_token_id = synthetic::dec_id;
  c.num_query_tokens = 8;
  c.image_text_hidden_size = 64;
  c.with_text = true;
  c.with_stage1_heads = true;
  return c;
}

// BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm (1, 0); temp 0.07 as BLIP-2.
void initialise(qformer_model<float>& m, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for_each_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const bool norm = name.find("LayerNorm") != std::string::npos || name.find("layernorm") != std::string::npos;
    const bool bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    for (index_t k = 0; k < v.size(); ++k)
      v.data()[k] = norm ? (bias ? 0.0f : 1.0f) : bias ? 0.0f : nd(gen);
  });
  m.w.temp.data()[0] = 0.07f;
}

template <class Be>
struct evaluator {
  Be& be;
  qformer_model<float>& m;
  index_t N, Q, D;
  host_tensor<float, 3> image_feats;  // (N, Q, D)
  host_tensor<float, 2> text_feat;    // (N, D)
  host_tensor<float, 2> sim;          // (N, N) image x text ITC cosine (max over queries)
  image_kv_state<float> kv;           // every image's cross-attention K/V, for the ITM re-ranking

  // ITC features of every image and caption, in chunks (evaluation mode).
  void features(const host_tensor<float, 3>& embeds, const host_tensor<index_t, 2>& ids, const host_tensor<index_t, 2>& mask) {
    const index_t C = m.config().qformer.hidden_size, T = ids.extent(1), E = embeds.extent(2), Nt = embeds.extent(1);
    image_feats = host_tensor<float, 3>({N, Q, D});
    text_feat = host_tensor<float, 2>({N, D});
    encode_image_kv(be, m, kv, embeds.view());
    const index_t chunk = 250;
    qformer_pass_state<float> st;
    projection_state<float> proj;
    host_tensor<float, 3> qo({chunk, Q, C});
    for (index_t c0 = 0; c0 < N; c0 += chunk) {
      const index_t n = std::min(chunk, N - c0);
      std::vector<index_t> idx(static_cast<std::size_t>(n));
      for (index_t b = 0; b < n; ++b) idx[static_cast<std::size_t>(b)] = c0 + b;
      qformer_pass_inputs<float> ip;
      ip.batch = n;
      ip.queries = true;
      ip.image = &kv;
      ip.image_index = idx;
      qformer_forward(be, m, st, ip);
      const tensor_view<float, 3> q3(qo.data(), {n, Q, C});
      copy(be, q3, detail::as_const(detail::by_batch(detail::row_range(st.output(), 0, Q * n), n)));
      projection_forward(be, proj, m.w.vision_projection, detail::as_const(tensor_view<float, 2>(qo.data(), {n * Q, C})));
      std::copy(proj.feats.data(), proj.feats.data() + n * Q * D, image_feats.data() + c0 * Q * D);
      qformer_pass_inputs<float> tp;
      tp.batch = n;
      tp.input_ids = tensor_view<const index_t, 2>(ids.data() + c0 * T, {n, T});
      tp.attention_mask = tensor_view<const index_t, 2>(mask.data() + c0 * T, {n, T});
      qformer_forward(be, m, st, tp);
      projection_forward(be, proj, m.w.text_projection, detail::as_const(detail::row_range(st.output(), 0, n)));
      std::copy(proj.feats.data(), proj.feats.data() + n * D, text_feat.data() + c0 * D);
    }
    (void)E;
    (void)Nt;
    itc_similarity_state<float> itc;
    itc_similarity_forward(be, itc, detail::as_const(image_feats.view()), detail::as_const(text_feat.view()));
    sim = host_tensor<float, 2>({N, N});
    std::copy(itc.sim.data(), itc.sim.data() + N * N, sim.data());
  }

  // Mean ITM logit of class 1 ("match") for each (image, text) pair, through the joint pass in chunks.
  std::vector<float> itm_scores(const std::vector<std::pair<index_t, index_t>>& pairs, const host_tensor<index_t, 2>& ids,
                                const host_tensor<index_t, 2>& mask) {
    const index_t T = ids.extent(1), P = static_cast<index_t>(pairs.size()), chunk = 512;
    std::vector<float> out(static_cast<std::size_t>(P));
    qformer_pass_state<float> st;
    itm_head_state<float> head;
    std::vector<index_t> img, pid, pmask;
    for (index_t c0 = 0; c0 < P; c0 += chunk) {
      const index_t n = std::min(chunk, P - c0);
      img.resize(static_cast<std::size_t>(n));
      pid.resize(static_cast<std::size_t>(n * T));
      pmask.resize(static_cast<std::size_t>(n * T));
      for (index_t b = 0; b < n; ++b) {
        const auto [i, j] = pairs[static_cast<std::size_t>(c0 + b)];
        img[static_cast<std::size_t>(b)] = i;
        std::copy(ids.data() + j * T, ids.data() + (j + 1) * T, pid.data() + b * T);
        std::copy(mask.data() + j * T, mask.data() + (j + 1) * T, pmask.data() + b * T);
      }
      qformer_pass_inputs<float> jp;
      jp.batch = n;
      jp.queries = true;
      jp.image = &kv;
      jp.image_index = img;
      jp.input_ids = tensor_view<const index_t, 2>(pid.data(), {n, T});
      jp.attention_mask = tensor_view<const index_t, 2>(pmask.data(), {n, T});
      qformer_forward(be, m, st, jp);
      itm_head_forward(be, head, m.w.itm_head, detail::as_const(detail::row_range(st.output(), 0, Q * n)), n);
      for (index_t b = 0; b < n; ++b) out[static_cast<std::size_t>(c0 + b)] = head.logits(b, 1);
    }
    return out;
  }
};

template <class Be>
int run(Be& be, const options& o) {
  const auto t_start = clock_type::now();
  auto seconds = [&] { return std::chrono::duration<double>(clock_type::now() - t_start).count(); };
  std::filesystem::create_directories(o.out);

  // ---- data: a world of scenes, train on some attribute combinations, evaluate on held-out ones ----
  const synthetic::shapes_world world;
  const frozen_patch_encoder encoder;
  const auto counts = world.counts();
  const synthetic::eval_set eval = synthetic::build_eval_set(world, o.eval, o.seed + 100);
  const index_t H = world.config().image_size, T = world.num_tokens(), N = encoder.num_tokens(), E = encoder.dim();
  std::printf("data: %lld training scenes, %lld held-out scenes; evaluation: %lld pairs with unique captions, "
              "%lld position / %lld colour / %lld size-swapped distractor pairs\n",
              static_cast<long long>(world.train_scenes().size()), static_cast<long long>(world.held_out_scenes().size()),
              static_cast<long long>(eval.size()), static_cast<long long>(eval.position_swap_pairs),
              static_cast<long long>(eval.colour_swap_pairs), static_cast<long long>(eval.size_swap_pairs));
  (void)counts;

  // ---- model, optimiser, schedule ----
  qformer_model<float> m(demo_config(E));
  initialise(m, o.seed);
  adamw_options ao;
  ao.weight_decay = 0.05;
  auto optim = make_adamw(m, ao);
  warmup_cosine_schedule lr{.base_lr = 1e-3, .min_lr = 1e-5, .warmup_start_lr = 1e-5,
                            .warmup_steps = std::min<index_t>(30, o.steps / 5), .total_steps = o.steps};
  std::printf("model: Q-Former %lld layers, hidden %lld, %lld queries, %lld parameters; objectives %s; "
              "batch %lld, %lld steps, backend %s\n",
              static_cast<long long>(m.config().qformer.num_hidden_layers),
              static_cast<long long>(m.config().qformer.hidden_size), static_cast<long long>(m.config().num_query_tokens),
              static_cast<long long>(m.parameters().size()), o.objectives.c_str(), static_cast<long long>(o.batch),
              static_cast<long long>(o.steps), Be::name);

  // ---- train ----
  csv_log csv = csv_log::stage1((std::filesystem::path(o.out) / "losses.csv").string());
  progress_bar bar(o.steps, {.label = "stage 1"});
  host_tensor<float, 4> images({o.batch, H, H, 3});
  host_tensor<index_t, 2> ids({o.batch, T}), mask({o.batch, T});
  host_tensor<float, 3> embeds({o.batch, N, E});
  stage1_state<float> st;
  blip2_sampler sampler;
  stage1_options so;
  so.weights = o.weights;
  stage1_losses last{};
  for (index_t step = 0; step < o.steps; ++step) {
    world.train_batch(o.seed, static_cast<std::uint64_t>(step * o.batch), images.view(), ids.view(), mask.view());
    encoder.encode(detail::as_const(images.view()), embeds.view());
    so.seed = o.seed * 1000003u + static_cast<std::uint64_t>(step);
    stage1_batch<float> batch{detail::as_const(embeds.view()), detail::as_const(ids.view()), detail::as_const(mask.view()), {}};
    m.zero_grad();
    last = stage1_step(be, m, st, batch, sampler, so);
    clip_grad_norm(m.gradients(), 1.0);
    const double rate = lr(step);
    optim.step(m.parameters(), m.gradients(), rate);
    csv.row(stage1_row{step + 1, last.itc, last.itm, last.itg, last.total, rate, seconds()});
    bar.update(step + 1, {{"itc", last.itc}, {"itm", last.itm}, {"itg", last.itg}}, rate);
  }
  bar.finish();
  csv.close();
  const double train_seconds = seconds();
  write_training_plot((std::filesystem::path(o.out) / "losses.png").string(),
                      read_csv((std::filesystem::path(o.out) / "losses.csv").string()),
                      plot_options{.title = "stage 1 (" + o.objectives + "): Q-Former from scratch"});

  // ---- evaluate: ITC ranking, then the ITC top-k re-ranked by mean ITM logit + ITC ----
  const index_t Ne = eval.size();
  host_tensor<float, 4> eimages({Ne, H, H, 3});
  host_tensor<index_t, 2> eids({Ne, T}), emask({Ne, T});
  synthetic::render_eval_set(world, eval, eimages.view(), eids.view(), emask.view());
  host_tensor<float, 3> eembeds({Ne, N, E});
  encoder.encode(detail::as_const(eimages.view()), eembeds.view());
  evaluator<Be> ev{be, m, Ne, m.config().num_query_tokens, m.config().image_text_hidden_size, {}, {}, {}, {}};
  ev.features(eembeds, eids, emask);
  const auto gt = retrieval_ground_truth::one_to_one(Ne);
  const auto itc = retrieval_recall(detail::as_const(ev.sim.view()), gt);
  std::printf("%s", format_retrieval(itc, "ITC").c_str());
  retrieval_result final_result = itc;
  std::string final_kind = "itc";
  if (o.weights.itm != 0) {
    const auto plan = plan_rerank(detail::as_const(ev.sim.view()), o.rerank_k);
    const auto itm = ev.itm_scores(plan.pairs, eids, emask);
    std::vector<float> scores(itm.size());
    for (std::size_t q = 0; q < itm.size(); ++q) {
      const auto [i, j] = plan.pairs[q];
      scores[q] = itm[q] + ev.sim(i, j);  // BLIP-2's re-ranking score: ITM match logit + ITC similarity
    }
    final_result = rerank_recall(detail::as_const(ev.sim.view()), plan, std::span<const float>(scores), gt);
    std::printf("%s", format_retrieval(final_result, "ITC top-" + std::to_string(o.rerank_k) + " re-ranked by ITM + ITC").c_str());
    final_kind = "itc+itm_rerank";
  }
  const double total_seconds = seconds();
  std::printf("R@1 text->image %.3f, image->text %.3f over %lld candidates (chance %.4f); train %.1f s, total %.1f s\n",
              final_result.t2i.r1, final_result.i2t.r1, static_cast<long long>(Ne), final_result.t2i.chance1,
              train_seconds, total_seconds);
  std::printf("{\"t2i_r1\": %.4f, \"i2t_r1\": %.4f, \"t2i_r5\": %.4f, \"i2t_r5\": %.4f, \"itc_t2i_r1\": %.4f, "
              "\"itc_i2t_r1\": %.4f, \"ranking\": \"%s\", \"objectives\": \"%s\", \"candidates\": %lld, \"steps\": %lld, "
              "\"final_loss_itc\": %.4f, \"final_loss_itm\": %.4f, \"final_loss_itg\": %.4f, \"seconds\": %.1f}\n",
              final_result.t2i.r1, final_result.i2t.r1, final_result.t2i.r5, final_result.i2t.r5, itc.t2i.r1, itc.i2t.r1,
              final_kind.c_str(), o.objectives.c_str(), static_cast<long long>(Ne), static_cast<long long>(o.steps),
              last.itc, last.itm, last.itg, total_seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  try {
    if (o.onednn) {
      onednn_backend be;
      return run(be, o);
    }
    reference_backend be;
    return run(be, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stage1_demo: %s\n", e.what());
    return 1;
  }
}
