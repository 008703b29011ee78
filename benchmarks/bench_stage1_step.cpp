// bench_stage1_step: one full BLIP-2 stage-1 training step at BLIP-2 sizes, against the machine's practical
// peak and against the same step in PyTorch eager, in one invocation.
//
// The step (blip2::stage1_step, then AdamW): the image K/V once per image, the image pass, the text pass,
// ITC, ITM over 3B pairs (positive, negative image, negative text), ITG over the image pass's cached query
// K/V, the backward of loss_itc + loss_itm + loss_itg, and one AdamW update (lr 1e-4, betas 0.9/0.98,
// weight decay 0.05 by the BLIP-2 rule: no decay for LayerNorm, biases, query_tokens, temp).
// Sizes: Q-Former L 12 layers, C 768, NH 12, F 3072, Q 32 queries, cross-attention on layers 0, 2, ...,
// N 257 image tokens of width E 1408, V 30523, D 256, B 8 pairs, T 32 text tokens (varied lengths, padded).
//
// Printed beside it, measured in the same run:
//   - the practical peak: a oneDNN f32 matmul 2048^3, at the start and at the end ("% peak" is against the
//     larger; a gap between them shows a busy machine);
//   - PyTorch eager (benchmarks/peers/stage1_step_torch.py, /usr/bin/python3, torch.set_num_threads with
//     the same count, float32, whatever libblas.so.3 is selected: it says which): the same step written in
//     torch the way LAVIS writes it (the image K/V are projected again for every ITM pair, 4B images a
//     step), on the SAME weights and batch (both sides generate them from one counter-based hash), with the
//     SAME fixed ITM negatives, so the losses and the gradient norm of the first step are compared;
//   - peak memory of each side, each measured in its own process (getrusage ru_maxrss; the peer is a
//     separate process), raw and net of the process's resident size just before its model was built;
//   - bfloat16: whether oneDNN offers a bf16 matmul on this CPU (it does not on AVX2: then no bf16 speed;
//     --bf16-emulated shows the numerics).
// FLOP: 2 per multiply-add of the matmuls (linear layers, attention's q k^T and p v, the LM head), forward
// and backward, from the shapes of each side's computation (see step_flops); LayerNorm, GELU, softmax,
// the losses and AdamW are not counted.
// Dropout: off by default on both sides (so the losses can be compared); --dropout P turns it on on both
// sides (then the two sides draw different masks and their losses differ).
//
// Usage: bench_stage1_step [--quick] [--reps N] [--threads N] [--layers N] [--batch B] [--text T]
//                          [--dropout P] [--sample-negatives] [--profile] [--no-peer] [--peer PATH]
//                          [--python PATH] [--peer-kv-once] [--bf16-emulated]
//   --quick             1 timed step after the warm-up on each side (default 3)
//   --layers N          a shallower Q-Former (a fast smoke run; FLOP counts follow)
//   --sample-negatives  ITM negatives drawn by BLIP-2's sampler (ours) and torch.multinomial (the peer)
//                       instead of the fixed indices: the ITM losses then differ
//   --peer-kv-once      also run the peer with the image K/V computed once per image (our algorithm in
//                       torch), to separate the algorithm from the implementation
//   --profile           a per-op breakdown of one oneDNN step (calls, ms, share)
//   --bf16-emulated     also one step (on fresh weights) with the oneDNN backend's bf16 linear inputs
//                       (rounded to bfloat16, float32 products and sums: onednn_backend::linear_precision),
//                       for its losses and gradient against float32's; its time is float32's plus the
//                       rounding, not a bf16 speed (this CPU has no bf16 matmul)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "bench_common.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/train/stage1_step.hpp"

#ifndef BLIP2_STAGE1_PEER_SCRIPT
#define BLIP2_STAGE1_PEER_SCRIPT "benchmarks/peers/stage1_step_torch.py"
#endif

using namespace blip2;
using namespace blip2::bench;

namespace {

constexpr index_t N_IMG = 257, E_IMG = 1408, VOCAB = 30523;
constexpr index_t CLS_ID = 101, PAD_ID = 0;
constexpr double LR = 1e-4;

struct settings : peer_flags {
  bool quick = false, sample_negatives = false, peer_kv_once = false, bf16_emulated = false;
  index_t layers = 12, batch = 8, text = 32;
  double dropout = 0;
  settings() { reps = 3; peer_script = BLIP2_STAGE1_PEER_SCRIPT; }
} cfg;

// Resident set now (VmRSS) and the peak so far (ru_maxrss), in MiB.
double rss_now_mib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}
double rss_peak_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// The processes (other than this one and its children) that used the most CPU over a one-second window.
std::string top_others() {
  std::FILE* p = popen("ps -eo pid,ppid,pcpu,comm --sort=-pcpu --no-headers 2>/dev/null | head -6", "r");
  if (!p) return "";
  std::string out;
  char buf[256];
  const long self = static_cast<long>(::getpid());
  while (std::fgets(buf, sizeof buf, p)) {
    long pid = 0, ppid = 0;
    double pcpu = 0;
    char comm[128] = "";
    if (std::sscanf(buf, "%ld %ld %lf %127s", &pid, &ppid, &pcpu, comm) != 4) continue;
    if (pid == self || ppid == self || std::strcmp(comm, "ps") == 0 || std::strcmp(comm, "head") == 0 ||
        std::strcmp(comm, "sh") == 0 || pcpu < 1.0)
      continue;
    char row[200];
    std::snprintf(row, sizeof row, "%s%s (pid %ld) %.0f%%", out.empty() ? "" : ", ", comm, pid, pcpu);
    out += row;
  }
  pclose(p);
  return out.empty() ? "none above 1%" : out;
}

// Caption b has length max(2, T - (5 b) mod max(1, T - 8)): [CLS] 101, then ids in [1000, 30000), then pads (0).
index_t text_length(index_t b, index_t T) { return std::max<index_t>(2, T - (5 * b) % std::max<index_t>(1, T - 8)); }

struct batch_data {
  host_tensor<float, 3> images;  // (B, N, E)
  host_tensor<index_t, 2> ids, mask;  // (B, T)
  std::vector<index_t> neg_image, neg_text;  // (B) fixed ITM negatives
};
batch_data make_batch(index_t B, index_t T) {
  batch_data d{host_tensor<float, 3>({B, N_IMG, E_IMG}), host_tensor<index_t, 2>({B, T}), host_tensor<index_t, 2>({B, T}), {}, {}};
  for (index_t i = 0; i < d.images.size(); ++i) d.images[i] = unit(image_ordinal, static_cast<std::uint64_t>(i));
  for (index_t b = 0; b < B; ++b) {
    const index_t len = text_length(b, T);
    for (index_t t = 0; t < T; ++t) {
      const index_t id = t == 0 ? CLS_ID : 1000 + static_cast<index_t>(bits24(text_ordinal, static_cast<std::uint64_t>(b * T + t)) % 29000);
      d.ids(b, t) = t < len ? id : PAD_ID;
      d.mask(b, t) = t < len ? 1 : 0;
    }
    d.neg_image.push_back((b + 1) % B);      // ITM row B + b: image b + 1 with text b
    d.neg_text.push_back((b + B - 1) % B);   // ITM row 2B + b: image b with text b - 1
  }
  return d;
}

// ---- FLOP of one step, from the shapes ----
// kv_images: how many images' cross-attention K/V are projected (ours B; LAVIS B for the image pass + 3B for
// the ITM pairs); dimage: whether the backward also computes d image_embeds (LAVIS does, for its trainable
// ln_vision; neither program here does: the image embeddings are an input without gradient); lm_rows: rows
// the LM head runs on (ours (T-1) B, the predicting rows; LAVIS T B, shifting afterwards); Tv: text rows
// computed per caption (ours: the unmasked tokens, qformer_pass_inputs::skip_padding; LAVIS: all T; attention
// still spans the padded T); reads_only: the last layer of the text and ITM passes computes only the rows
// their heads read ([CLS]; the queries) beyond K and V (qformer_pass_inputs::output_positions).
struct step_flop {
  double kv_fwd = 0, kv_bwd = 0, passes_fwd = 0;
  double total() const { return kv_fwd + kv_bwd + 3 * passes_fwd; }  // backward of a pass = 2x its forward
};
step_flop step_flops(const qformer_config& q, index_t Qn, index_t D, index_t B, index_t T, index_t kv_images, bool dimage,
                     index_t lm_rows, double Tv, bool reads_only) {
  const double C = q.hidden_size, F = q.intermediate_size, N = N_IMG, E = q.encoder_hidden_size, V = q.vocab_size;
  auto lin = [](double M, double K, double Nn) { return 2 * M * K * Nn; };
  step_flop f;
  double img = 0, txt = 0, itm = 0, itg = 0;
  const double R = 3.0 * B;  // ITM pairs
  for (index_t l = 0; l < q.num_hidden_layers; ++l) {
    const bool cross = q.has_cross_attention(l), last = reads_only && l + 1 == q.num_hidden_layers;
    if (cross) f.kv_fwd += 2 * lin(double(kv_images) * N, E, C);
    // image pass: B Q query rows; self-attention Q x Q; cross q, o and attention Q x N
    img += 4 * lin(B * Qn, C, C) + 2 * lin(B * Qn, C, F) + 4.0 * B * Qn * Qn * C;
    if (cross) img += 2 * lin(B * Qn, C, C) + 4.0 * B * Qn * N * C;
    // a layer over `rows` rows of which `out` rows (the others give only K and V), attention out x keys
    auto layer = [&](double rows, double out, double keys) {
      return 2 * lin(rows, C, C) + 2 * lin(out, C, C) + 2 * lin(out, C, F) + 4.0 * out * keys * C;
    };
    // text pass: B Tv rows, self-attention over T keys ([CLS] alone in a reads-only last layer)
    txt += layer(B * Tv, last ? B : B * Tv, T);
    // ITM: 3B (Q + Tv) rows, self-attention over Q + T keys, cross on the 3B Q query rows
    itm += layer(R * (Qn + Tv), last ? R * Qn : R * (Qn + Tv), Qn + T);
    if (cross) itm += 2 * lin(R * Qn, C, C) + 4.0 * R * Qn * N * C;
    // ITG: B Tv text rows attending to Q cached query keys + T text keys (all products computed, then masked)
    itg += layer(B * Tv, B * Tv, Qn + T);
  }
  itg += lin(lm_rows, C, C) + lin(lm_rows, C, V);                                   // LM head
  const double heads = lin(B * Qn, C, D) + lin(B, C, D) + lin(R * Qn, C, 2);        // ITC projections, ITM head
  f.passes_fwd = img + txt + itm + itg + heads;
  f.kv_bwd = f.kv_fwd * (dimage ? 2 : 1);  // d W always; d image only when the image gets a gradient
  return f;
}

}  // namespace

// ---- the per-op profile (--profile): each kernel call under its op name (and linear shapes) ----
template <class Op, class... A>
std::string bench::profile_key(const A&... a) {
  std::string key(Op::name);
  const auto args = std::forward_as_tuple(a...);
  auto rows_to = [&](const auto& inp, const auto& w) {
    return " " + std::to_string(inp.extent(0)) + "x" + std::to_string(inp.extent(1)) + "->" + std::to_string(w.extent(0));
  };
  if constexpr (std::is_same_v<Op, op::linear_forward>)
    key += rows_to(std::get<1>(args), std::get<2>(args));
  else if constexpr (std::is_same_v<Op, op::linear_backward>)
    key += rows_to(std::get<4>(args), std::get<5>(args)) + (std::get<0>(args).data() ? "" : " (dW only)");
  return key;
}

namespace {

// ---- the PyTorch peer: one JSON object on one line of its stdout ----
struct peer_result {
  bool ok = false;
  std::string note, line, blas, torch_version;
  double median_ms = 0, min_ms = 0, max_ms = 0, fwd_bwd_ms = 0, optim_ms = 0, grad_norm = NAN;
  double rss_base_mib = 0, rss_peak_mib = 0, others = -1, flop = 0;
  int runs = 0;
  std::vector<double> first_losses, last_losses;
};

peer_result run_peer(int threads, const batch_data& d, bool kv_once) {
  peer_result r;
  r.note = peer_unavailable(cfg.python, cfg.peer_script);
  if (!r.note.empty()) return r;
  char extra[256];
  std::snprintf(extra, sizeof extra, " --layers %ld --batch %ld --text %ld --dropout %g --reps %d", static_cast<long>(cfg.layers),
                static_cast<long>(cfg.batch), static_cast<long>(cfg.text), cfg.dropout, cfg.reps);
  std::string cmd = cfg.python + " " + cfg.peer_script + " --threads " + std::to_string(threads) + extra;
  if (cfg.sample_negatives)
    cmd += " --sample-negatives";
  else
    cmd += " --neg-image " + join(d.neg_image) + " --neg-text " + join(d.neg_text);
  if (kv_once) cmd += " --kv-once";
  r.note = run_peer_command(cmd, [&](const std::string& line) {
    if (line.rfind("{\"peer\"", 0) == 0) r.line = line;
    else std::printf("  peer: %s", line.c_str());  // its progress lines
    std::fflush(stdout);
  });
  if (!r.note.empty()) return r;
  if (r.line.empty()) {
    r.note = "no result line in the peer's output";
    return r;
  }
  json_field(r.line, "blas", r.blas);
  json_field(r.line, "torch", r.torch_version);
  r.median_ms = json_number(r.line, "median_ms");
  r.min_ms = json_number(r.line, "min_ms");
  r.max_ms = json_number(r.line, "max_ms");
  r.fwd_bwd_ms = json_number(r.line, "fwd_bwd_ms");
  r.optim_ms = json_number(r.line, "optim_ms");
  r.runs = static_cast<int>(json_number(r.line, "runs", 0));
  r.grad_norm = json_number(r.line, "grad_norm_first");
  r.rss_base_mib = json_number(r.line, "rss_base_mib");
  r.rss_peak_mib = json_number(r.line, "rss_peak_mib");
  r.first_losses = json_numbers(r.line, "losses_first");
  r.last_losses = json_numbers(r.line, "losses_last");
  r.ok = r.runs > 0 && r.first_losses.size() == 3;
  if (!r.ok) r.note = "incomplete result line: " + r.line;
  return r;
}

// Can oneDNN make a bf16 x bf16 -> f32 matmul here? (The bf16 option needs one.)
std::string bf16_finding(bool emulated_run) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  const index_t P = 256;
  const dnnl::memory::desc a({P, P}, dt::bf16, tag::ab), b({P, P}, dt::bf16, tag::ab), c({P, P}, dt::f32, tag::ab);
  char out[512];
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
    std::snprintf(out, sizeof out, "oneDNN offers a bf16 x bf16 -> f32 matmul here (%s), but the library does not call it: "
                  "its bf16 linear mode rounds the inputs and multiplies in float32", pd.impl_info_str());
  } catch (const dnnl::error& e) {
    std::snprintf(out, sizeof out, "oneDNN %d.%d.%d has no bf16 x bf16 -> f32 matmul on this CPU (ISA %s: \"%s\"): the "
                  "issue's bfloat16-matmul option cannot run at bf16 speed here%s",
                  dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch,
                  onednn_cpu_isa_name().c_str(), e.what(),
                  emulated_run ? " (its numerics: the bf16-emulated step)" : " (--bf16-emulated runs its numerics)");
  }
  return out;
}

struct ours_result {
  double median_s = 0, min_s = 0, max_s = 0, fwd_bwd_s = 0, optim_s = 0, grad_norm = 0;
  double rss_base_mib = 0, rss_peak_before_mib = 0, rss_peak_mib = 0, others = -1, state_mib = 0;
  int runs = 0;
  stage1_losses first, last;
};

}  // namespace

int main(int argc, char** argv) {
  const double rss_at_start = rss_now_mib();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return flag_value(argc, argv, i); };
    if (a == "--quick") cfg.quick = true, cfg.reps = 1;
    else if (read_peer_flag(a, next, cfg)) continue;
    else if (a == "--layers") cfg.layers = std::max<index_t>(1, std::stoll(next()));
    else if (a == "--batch") cfg.batch = std::max<index_t>(2, std::stoll(next()));
    else if (a == "--text") cfg.text = std::max<index_t>(2, std::stoll(next()));
    else if (a == "--dropout") cfg.dropout = std::stod(next());
    else if (a == "--sample-negatives") cfg.sample_negatives = true;
    else if (a == "--peer-kv-once") cfg.peer_kv_once = true;
    else if (a == "--bf16-emulated") cfg.bf16_emulated = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_stage1_step [--quick] [--reps N] [--threads N] [--layers N] [--batch B] [--text T] "
                   "[--dropout P] [--sample-negatives] [--profile] [--no-peer] [--peer PATH] [--python PATH] "
                   "[--peer-kv-once] [--bf16-emulated]\n");
      return 2;
    }
  }
  const int threads = set_threads(cfg.threads);
  const double start = now_s();
  print_banner("bench_stage1_step", cfg.quick, threads);
  std::printf("busiest other processes now: %s\n", top_others().c_str());
  std::printf("each side: 1 warm-up step (its losses are the ones compared), then %d timed steps; medians\n\n", cfg.reps);

  // ---- the practical peak: one large f32 matmul through oneDNN (its buffers freed before the model) ----
  const index_t P = 2048;
  auto peak = [&](const char* when) {
    onednn_backend pbe;
    peak_operands ab(P);
    return print_peak(pbe, ab, when, cfg.quick ? 5 : 10);
  };
  const double peak_start = peak("start");
  std::printf("bf16: %s\n", bf16_finding(cfg.bf16_emulated).c_str());

  // ---- the model and the batch ----
  qformer_model_config mc;
  mc.qformer.vocab_size = VOCAB;  // LAVIS: bert-base-uncased + [DEC]
  mc.qformer.num_hidden_layers = cfg.layers;
  mc.qformer.hidden_dropout_prob = cfg.dropout;
  mc.qformer.attention_probs_dropout_prob = cfg.dropout;
  mc.with_text = true;
  mc.with_stage1_heads = true;
  const auto& qc = mc.qformer;
  const index_t B = cfg.batch, T = cfg.text, Qn = mc.num_query_tokens, D = mc.image_text_hidden_size;
  double Tv = 0;  // unmasked tokens per caption
  for (index_t b = 0; b < B; ++b) Tv += static_cast<double>(text_length(b, T)) / static_cast<double>(B);
  const step_flop ours_f = step_flops(qc, Qn, D, B, T, B, false, (T - 1) * B, Tv, true);
  const step_flop lavis_f = step_flops(qc, Qn, D, B, T, 4 * B, true, T * B, T, false);
  const step_flop peer_f = step_flops(qc, Qn, D, B, T, cfg.peer_kv_once ? B : 4 * B, false, T * B, T, false);
  const step_flop peer_once_f = step_flops(qc, Qn, D, B, T, B, false, T * B, T, false);
  const double n_params = static_cast<double>(parameter_count<float>(mc));
  std::printf("\nstep: Q-Former %ld layers, C %ld, NH %ld, F %ld, Q %ld queries, cross-attention every %ld, image %ld x %ld, "
              "V %ld, D %ld; B %ld pairs, T %ld; %.1f M parameters; dropout %g (both sides); ITM negatives %s\n",
              static_cast<long>(qc.num_hidden_layers), static_cast<long>(qc.hidden_size), static_cast<long>(qc.num_attention_heads),
              static_cast<long>(qc.intermediate_size), static_cast<long>(Qn), static_cast<long>(qc.cross_attention_frequency),
              static_cast<long>(N_IMG), static_cast<long>(E_IMG), static_cast<long>(VOCAB), static_cast<long>(D),
              static_cast<long>(B), static_cast<long>(T), n_params * 1e-6, cfg.dropout,
              cfg.sample_negatives ? "sampled (BLIP-2 sampler; torch.multinomial in the peer)" : "fixed (the same indices on both sides)");
  std::printf("FLOP per step (2 per multiply-add, forward + backward, from the shapes):\n");
  std::printf("  LAVIS as written (image K/V for B + 3B images, d image_embeds for ln_vision, LM head on T B rows): %8.1f GFLOP "
              "(image K/V %.1f)\n", lavis_f.total() * 1e-9, (lavis_f.kv_fwd + lavis_f.kv_bwd) * 1e-9);
  std::printf("  the PyTorch peer (LAVIS's per-pair image K/V, no d image_embeds: the images are an input):        %8.1f GFLOP "
              "(image K/V %.1f)\n", peer_f.total() * 1e-9, (peer_f.kv_fwd + peer_f.kv_bwd) * 1e-9);
  std::printf("  ours (image K/V once per image, no d image_embeds, LM head on the (T-1) B predicting rows,\n"
              "        %.1f of %ld text rows a caption (padding skipped), last layer: only the rows read):       %8.1f GFLOP "
              "(image K/V %.1f) = %.1f%% less than LAVIS, %.1f%% less than the peer\n",
              Tv, static_cast<long>(T), ours_f.total() * 1e-9, (ours_f.kv_fwd + ours_f.kv_bwd) * 1e-9, 100 * (1 - ours_f.total() / lavis_f.total()),
              100 * (1 - ours_f.total() / peer_f.total()));
  std::fflush(stdout);

  const batch_data d = make_batch(B, T);
  stage1_batch<float> batch;
  batch.image_embeds = d.images.view();
  batch.input_ids = d.ids.view();
  batch.attention_mask = d.mask.view();
  stage1_options so;
  so.training = true;  // dropout as the config says (0 unless --dropout)
  so.seed = 1;
  const std::span<const index_t> fixed_ni = cfg.sample_negatives ? std::span<const index_t>{} : std::span<const index_t>(d.neg_image);
  const std::span<const index_t> fixed_nt = cfg.sample_negatives ? std::span<const index_t>{} : std::span<const index_t>(d.neg_text);

  // ---- ours: model, optimiser, state; warm-up, then the timed steps ----
  ours_result ours;
  {
    ours.rss_base_mib = rss_now_mib();
    ours.rss_peak_before_mib = rss_peak_mib();
    qformer_model<float> m(mc);
    fill_hashed(m);
    auto optim = make_adamw(m, adamw_options{});
    onednn_backend be;
    be.set_linear(onednn_backend::linear_precision::f32);  // float32 whatever BLIP2_ONEDNN_LINEAR says
    stage1_state<float> st;
    blip2_sampler sampler;
    ours.state_mib = 4.0 * n_params * 4 / (1 << 20);  // parameters, gradients, two AdamW moments
    auto one_step = [&](std::uint64_t seed, double& fb, double& opt_s, double* gnorm) {
      so.seed = seed;
      const double t0 = now_s();
      m.zero_grad();
      const stage1_losses l = stage1_step(be, m, st, batch, sampler, so, fixed_ni, fixed_nt);
      const double t1 = now_s();
      if (gnorm) *gnorm = grad_norm(m.gradients());
      const double t2 = now_s();
      optim.step(m.parameters(), m.gradients(), LR);
      const double t3 = now_s();
      fb = t1 - t0;
      opt_s = t3 - t2;
      return l;
    };
    std::printf("\nours (oneDNN backend, float32): warm-up step ...\n");
    std::fflush(stdout);
    double fb = 0, os = 0;
    const double tw = now_s();
    ours.first = one_step(1, fb, os, &ours.grad_norm);
    std::printf("  warm-up step %.1f s: loss_itc %.6f, loss_itm %.6f, loss_itg %.6f; |grad| %.6e\n", now_s() - tw, ours.first.itc,
                ours.first.itm, ours.first.itg, ours.grad_norm);
    std::fflush(stdout);
    std::vector<double> tt, tfb, topt;
    const auto c0 = cpu_now();
    for (int r = 0; r < cfg.reps; ++r) {
      const double t0 = now_s();
      ours.last = one_step(2 + static_cast<std::uint64_t>(r), fb, os, nullptr);
      tt.push_back(now_s() - t0);
      tfb.push_back(fb);
      topt.push_back(os);
      std::printf("  step %d: %.2f s (forward + backward %.2f, AdamW %.3f); losses %.6f %.6f %.6f; load average %s\n", r + 1,
                  tt.back(), fb, os, ours.last.itc, ours.last.itm, ours.last.itg, loadavg().c_str());
      std::fflush(stdout);
    }
    ours.others = others_cores(c0, cpu_now());
    ours.runs = cfg.reps;
    ours.median_s = median(tt);
    ours.min_s = *std::min_element(tt.begin(), tt.end());
    ours.max_s = *std::max_element(tt.begin(), tt.end());
    ours.fwd_bwd_s = median(tfb);
    ours.optim_s = median(topt);
    ours.rss_peak_mib = rss_peak_mib();
    std::printf("  other processes used %.2f cores meanwhile; busiest now: %s\n", ours.others, top_others().c_str());

    if (cfg.profile) {
      profiled_onednn pbe;
      pbe.set_linear(onednn_backend::linear_precision::f32);
      stage1_state<float> pst;
      m.zero_grad();
      stage1_step(pbe, m, pst, batch, sampler, so, fixed_ni, fixed_nt);  // primitives
      pbe.stats.clear();
      m.zero_grad();
      const double t0 = now_s();
      stage1_step(pbe, m, pst, batch, sampler, so, fixed_ni, fixed_nt);
      const double total = now_s() - t0;
      const auto v = by_time(pbe.stats);
      double in_ops = 0;
      for (const auto& kv : v) in_ops += kv.second.seconds;
      std::printf("\nper-op breakdown of one forward + backward (oneDNN): %.2f s, %.2f s in kernels\n", total, in_ops);
      std::printf("  %-52s %6s %9s %7s %9s\n", "op and shape", "calls", "ms", "share", "GFLOP/s");
      for (const auto& [k, s] : v) {
        if (s.seconds < 0.002 * total) continue;
        char rate[32] = "";
        if (s.flops > 0) std::snprintf(rate, sizeof rate, "%9.1f", s.flops / s.seconds * 1e-9);
        std::printf("  %-52s %6d %9.1f %6.1f%% %9s\n", k.c_str(), s.calls, s.seconds * 1e3, 100 * s.seconds / total, rate);
      }
      std::printf("  (ops under 0.2%% not listed; outside kernels: %.1f ms)\n", (total - in_ops) * 1e3);
    }
  }  // the model, optimiser and state are freed before the peer runs

  // ---- the bf16 numerics: one step on fresh weights with bf16 linear inputs, against float32's first ----
  if (cfg.bf16_emulated) {
    qformer_model<float> m(mc);
    fill_hashed(m);
    onednn_backend be;
    be.set_linear(onednn_backend::linear_precision::bf16);
    stage1_state<float> st;
    blip2_sampler sampler;
    so.seed = 1;
    std::printf("\nbf16-emulated linear inputs (rounded to bfloat16, float32 products and sums), the warm-up step again:\n");
    std::fflush(stdout);
    const double t0 = now_s();
    const stage1_losses l = stage1_step(be, m, st, batch, sampler, so, fixed_ni, fixed_nt);
    const double t1 = now_s();
    const double gn = grad_norm(m.gradients());
    auto rel = [](double x, double ref) { return std::abs(x - ref) / std::max(std::abs(ref), 1e-30); };
    std::printf("  %.1f s (float32 warm-up step above: the same work without the rounding copies)\n", t1 - t0);
    std::printf("  loss_itc %.6f, loss_itm %.6f, loss_itg %.6f; |grad| %.6e; relative to float32: %.1e %.1e %.1e, |grad| %.1e\n",
                l.itc, l.itm, l.itg, gn, rel(l.itc, ours.first.itc), rel(l.itm, ours.first.itm), rel(l.itg, ours.first.itg),
                rel(gn, ours.grad_norm));
  }

  // ---- PyTorch, same threads, same weights and batch, same negatives ----
  peer_result peer, peer_once;
  if (cfg.peer) {
    std::printf("\n");
    const auto c0 = cpu_now();
    peer = run_peer(threads, d, false);
    peer.others = others_cores(c0, cpu_now());
    peer.flop = peer_f.total();
    if (!peer.ok) std::printf("PyTorch peer failed: %s\n", peer.note.c_str());
    if (cfg.peer_kv_once) {
      const auto c1 = cpu_now();
      peer_once = run_peer(threads, d, true);
      peer_once.others = others_cores(c1, cpu_now());
      peer_once.flop = peer_once_f.total();
      if (!peer_once.ok) std::printf("PyTorch peer (--kv-once) failed: %s\n", peer_once.note.c_str());
    }
  } else {
    peer.note = "--no-peer";
  }
  std::printf("\n");
  const double peak_end = peak("end"), pk = std::max(peak_start, peak_end);  // "% peak" against the higher

  // ---- the table ----
  std::printf("\n%-34s %5s %10s %9s %9s %7s %6s %12s %7s\n", "step (float32)", "runs", "ms/step", "images/s", "GFLOP/s", "% peak",
              "others", "fwd+bwd|opt", "vs torch");
  std::printf("%s\n", std::string(108, '-').c_str());
  const double peer_ips = peer.ok ? B / (peer.median_ms * 1e-3) : 0;
  auto row = [&](const char* name, int runs, double ms, double flop, double others, double fb_ms, double opt_ms) {
    const double ips = B / (ms * 1e-3), g = flop / (ms * 1e-3) * 1e-9;
    char vs[16] = "";
    if (peer_ips > 0) std::snprintf(vs, sizeof vs, "%.2fx", ips / peer_ips);
    char split[32];
    std::snprintf(split, sizeof split, "%.0f|%.0f", fb_ms, opt_ms);
    std::printf("%-34s %5d %10.0f %9.3f %9.1f %6.1f%% %6.2f %12s %7s\n", name, runs, ms, ips, g, 100 * g / pk, others, split, vs);
  };
  row("blip2 onednn", ours.runs, ours.median_s * 1e3, ours_f.total(), ours.others, ours.fwd_bwd_s * 1e3, ours.optim_s * 1e3);
  if (peer.ok) row("pytorch eager (LAVIS: K/V per pair)", peer.runs, peer.median_ms, peer.flop, peer.others, peer.fwd_bwd_ms, peer.optim_ms);
  if (peer_once.ok)
    row("pytorch eager, K/V once per image", peer_once.runs, peer_once.median_ms, peer_once.flop, peer_once.others,
        peer_once.fwd_bwd_ms, peer_once.optim_ms);
  std::printf("ms/step: median of the timed steps (ours: min %.0f, max %.0f; peer: min %.0f, max %.0f); images/s = B / step time;\n"
              "GFLOP/s: each side's own FLOP count / step time (ours %.1f, the peer %.1f GFLOP per step; at the LAVIS count of %.1f\n"
              "GFLOP ours would be %.1f \"LAVIS-equivalent\" GFLOP/s); %% peak against %.1f GFLOP/s (oneDNN f32 2048^3 matmul, the\n"
              "larger of start %.1f and end %.1f); others: cores other processes used meanwhile (> 0.1: the timing is inflated);\n"
              "fwd+bwd|opt: median ms of the step's forward + backward and of the AdamW update; vs torch: images/s over PyTorch's.\n",
              ours.min_s * 1e3, ours.max_s * 1e3, peer.min_ms, peer.max_ms, ours_f.total() * 1e-9, peer_f.total() * 1e-9,
              lavis_f.total() * 1e-9, lavis_f.total() / ours.median_s * 1e-9, pk, peak_start, peak_end);
  if (!peer.ok) std::printf("(no PyTorch row: %s)\n", peer.note.c_str());
  else std::printf("PyTorch %s on %s\n", peer.torch_version.c_str(), peer.blas.c_str());

  // ---- memory ----
  std::printf("\npeak memory (each side in its own process; MiB):\n");
  std::printf("  %-34s %10s %14s %10s\n", "", "raw peak", "base (before)", "net");
  std::printf("  %-34s %10.0f %14.0f %10.0f\n", "blip2 onednn", ours.rss_peak_mib, ours.rss_base_mib, ours.rss_peak_mib - ours.rss_base_mib);
  if (peer.ok)
    std::printf("  %-34s %10.0f %14.0f %10.0f\n", "pytorch eager", peer.rss_peak_mib, peer.rss_base_mib, peer.rss_peak_mib - peer.rss_base_mib);
  if (peer_once.ok)
    std::printf("  %-34s %10.0f %14.0f %10.0f\n", "pytorch eager, K/V once", peer_once.rss_peak_mib, peer_once.rss_base_mib,
                peer_once.rss_peak_mib - peer_once.rss_base_mib);
  std::printf("raw: the process's ru_maxrss after its steps; base: its resident size just before its model was built (ours: the\n"
              "program, oneDNN and the batch, %.0f MiB at start, peak %.0f MiB before the model; the peer: Python, torch and\n"
              "numpy imported); net = raw - base: what the model, optimiser and step added. Parameters + gradients + the two AdamW\n"
              "moments alone are %.0f MiB in float32 on either side.\n",
              rss_at_start, ours.rss_peak_before_mib, ours.state_mib);

  // ---- losses: the warm-up step (initial weights) on both sides ----
  std::printf("\nlosses of the first step (the same initial weights and batch%s):\n",
              cfg.sample_negatives ? "; negatives SAMPLED on each side, so ITM differs" : ", the same fixed negatives");
  std::printf("  %-14s %14s %14s %14s %14s\n", "", "loss_itc", "loss_itm", "loss_itg", "|grad|");
  std::printf("  %-14s %14.7f %14.7f %14.7f %14.7e\n", "blip2 onednn", ours.first.itc, ours.first.itm, ours.first.itg, ours.grad_norm);
  if (peer.ok) {
    std::printf("  %-14s %14.7f %14.7f %14.7f %14.7e\n", "pytorch", peer.first_losses[0], peer.first_losses[1], peer.first_losses[2],
                peer.grad_norm);
    const double ours_l[3] = {ours.first.itc, ours.first.itm, ours.first.itg};
    double worst = 0;
    std::printf("  %-14s", "relative diff");
    for (int k = 0; k < 3; ++k) {
      const double rel = std::abs(ours_l[k] - peer.first_losses[static_cast<std::size_t>(k)]) /
                         std::max(std::abs(peer.first_losses[static_cast<std::size_t>(k)]), 1e-30);
      worst = std::max(worst, rel);
      std::printf(" %14.2e", rel);
    }
    std::printf(" %14.2e\n", std::abs(ours.grad_norm - peer.grad_norm) / std::max(peer.grad_norm, 1e-30));
    if (cfg.dropout == 0 && !cfg.sample_negatives)
      std::printf("  losses %s (worst relative difference %.2e; the goal is ~1e-3)\n", worst < 1e-3 ? "AGREE" : "DISAGREE", worst);
    else
      std::printf("  (dropout on or negatives sampled: the two sides draw differently, only the magnitudes are comparable)\n");
    if (peer.last_losses.size() == 3)
      std::printf("  last timed step (after %d AdamW updates at lr %g): ours %.6f %.6f %.6f, pytorch %.6f %.6f %.6f\n", cfg.reps, LR,
                  ours.last.itc, ours.last.itm, ours.last.itg, peer.last_losses[0], peer.last_losses[1], peer.last_losses[2]);
  }
  std::printf("\nbf16: %s\n", bf16_finding(cfg.bf16_emulated).c_str());
  std::printf("\ntotal %.1f s; load average at the end %s; busiest other processes: %s\n", now_s() - start, loadavg().c_str(),
              top_others().c_str());
  return 0;
}
