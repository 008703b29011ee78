// bench_opt_decode: BLIP-2's frozen language model at real size (OPT-2.7B: 32 layers, width 2560, ffn
// 10240, 50272 vocabulary rows) on the oneDNN backend: the prefill of a soft prompt and a prompt, and
// decoding one token per sequence per step through the KV cache at batch 1 (greedy) and batch 5 (five
// beams), against the machine's limits and a PyTorch peer of the same decoder in the same run.
//
//   - the memory-bandwidth limit of decoding: every step reads every weight once (the 32 layers' linears
//     and the lm_head, tied to the embedding: 2.65 G floats, 10.6 GB); measured read bandwidth (a sum over
//     a buffer far larger than the caches, median of several) over those bytes is the best possible
//     tokens/s, and each decode figure is printed as a fraction of it;
//   - the compute limit of prefill: its FLOP (2 per multiply-add of every linear and of attention) over the
//     practical matmul peak (a large oneDNN f32 matmul, bench_common.hpp);
//   - peak RSS against the weights: the model is 10.6 GB of float32 on a 24 GB machine;
//   - the peer (peers/opt_decode_torch.py): the same decoder written from scratch in torch with a KV cache,
//     the same hashed weights and inputs (bench_common.hpp's unit), so the greedy tokens can be compared.
// Weights are generated in the program (counter-based hash), never stored. The model is freed before the
// peer runs: the two do not fit in memory together.
//
//   benchmarks/run_with_peer.sh bench_opt_decode --wait-idle 120 [--quick] [--layers N] [--tokens N]
//                               [--prompt N] [--reps N] [--threads N] [--no-peer]
// --quick: 4 layers, 8 tokens, 3 repetitions (the full size takes a few minutes: generating and reading
// 10.6 GB of weights, twice with the peer). Also, unless --no-caption / --no-bf16: one caption of a 224-px
// image end to end (ViT-g, Q-Former, prefill, 5 beams), and decoding with the matrices in bfloat16
// (linear_bf16_forward) against float32.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "bench_common.hpp"
#include "blip2/models/blip2_opt/generate_text.hpp"
#include "blip2/models/opt/session.hpp"
#include "blip2/models/vit/vision_transformer.hpp"

using namespace blip2;
using namespace blip2::bench;

namespace {

struct settings : peer_flags {
  bool quick = false, caption = true, bf16 = true;
  index_t layers = 32, tokens = 16, prompt = 8, queries = 32;
};

opt_config opt_2_7b(index_t layers) {
  opt_config c;
  c.vocab_size = 50272;
  c.hidden_size = 2560;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 32;
  c.ffn_dim = 10240;
  c.max_position_embeddings = 2048;
  c.word_embed_proj_dim = 2560;
  return c;
}

// Parameter k (for_each_opt_parameter order) from ordinal k: weights 0.05 u, biases 0.02 u, LayerNorm
// weights 1 + 0.1 u and biases 0.02 u (the rule of fill_hashed; the peer's make_params repeats it).
void fill_hashed_opt(opt_model<float>& m) {
  std::uint64_t ordinal = 0;
  for_each_opt_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const bool norm = name.find("layer_norm") != std::string::npos;
    float scale = 0.02f, shift = 0;
    if (norm && ends_with(name, ".weight"))
      scale = 0.1f, shift = 1;
    else if (ends_with(name, ".weight"))
      scale = 0.05f;
    float* p = v.data();
    const index_t n = v.size();
    const std::uint64_t o = ordinal++;
#pragma omp parallel for schedule(static)
    for (index_t i = 0; i < n; ++i) p[i] = shift + scale * unit(o, static_cast<std::uint64_t>(i));
  });
}

// Read bandwidth (bench_common.hpp's vector sums) over a buffer far larger than the caches, GB/s.
double read_bandwidth_gbs(std::size_t bytes, int reps) {
  std::vector<std::uint64_t> buf(bytes / 8);
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = i;
  return static_cast<double>(bytes) / read_bandwidth(buf.data(), bytes, reps).median_s * 1e-9;
}

// The peak resident set since the last reset_peak_rss() (VmHWM), GB; NaN where /proc has no such line.
double peak_rss_gb() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0 * 1e-9;  // in kB
  return NAN;
}
// Linux: writing 5 to clear_refs resets VmHWM to the current RSS (the bandwidth probe's buffer is gone).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct ours {
  double fill_s = 0, prefill_ms = 0, decode1_ms = 0, decode5_ms = 0, rss_gb = 0, weights_gb = 0, read_gb = 0;
  double prefill_gflop = 0;
  std::vector<index_t> tokens;
  // one caption end to end (ViT-g at 224 px, Q-Former, prefill, 5-beam decode of 30 new tokens at most)
  double caption_s = 0, vit_s = 0;
  index_t caption_tokens = 0;
  // bfloat16 decoder matrices (linear_bf16_forward)
  double bf16_read_gb = 0, bf16_decode1_ms = 0, bf16_decode5_ms = 0;
  index_t bf16_same_tokens = 0;
};

index_t argmax(tensor_view<const float, 2> logits, index_t row) {
  index_t best = 0;
  for (index_t v = 1; v < logits.extent(1); ++v)
    if (logits(row, v) > logits(row, best)) best = v;
  return best;
}

// Decode steps after a prefill of e: batch 1 greedy (its tokens), then batch 5 (the prefill's cache copied
// to five sequences, as beam search does); the median milliseconds of a step of each.
void decode(onednn_backend& be, const opt_model<float>& m, tensor_view<const float, 2> e, tensor_view<const index_t, 2> mk,
            index_t tokens, double& ms1, double& ms5, std::vector<index_t>& greedy) {
  const index_t V = m.config().vocab_size;
  opt_session<onednn_backend> s(be, m);
  std::vector<double> steps;
  s.start(e, mk, tokens);
  for (index_t k = 0; k < tokens; ++k) {
    const index_t tok = argmax(s.logits(), 0);
    greedy.push_back(tok);
    const double t0 = now_s();
    s.append(std::vector<std::int32_t>{static_cast<std::int32_t>(tok)});
    steps.push_back(now_s() - t0);
  }
  ms1 = median(steps) * 1e3;
  steps.clear();
  s.start(e, mk, tokens);
  s.select(std::vector<index_t>(5, 0));
  for (index_t k = 0; k < tokens; ++k) {
    std::vector<std::int32_t> toks(5);
    for (index_t b = 0; b < 5; ++b) toks[static_cast<std::size_t>(b)] = static_cast<std::int32_t>((argmax(s.logits(), b) + b) % V);
    const double t0 = now_s();
    s.append(toks);
    steps.push_back(now_s() - t0);
  }
  ms5 = median(steps) * 1e3;
}

// One caption of a 224-px image end to end: EVA ViT-g/14 (39 layers computed; they share one set of
// random weights to save 4 GB), the Q-Former's image pass (BLIP-2 size), the projection, the prefill of
// [32 queries ; 4 prompt ids] and LAVIS's caption decoding (5 beams, 1 to 30 new tokens; random weights
// rarely emit the end marker, so this is close to the 30-token worst case). The decoder is moved into the
// BLIP-2 model for the run and back afterwards.
void caption_end_to_end(onednn_backend& be, opt_model<float>& llm, ours& r) {
  const vision_config vc;  // EVA ViT-g/14 at 224 px
  vision_model<float> vit(vc, vision_storage::shared_layers);
  auto vp = vit.parameters();
  for (std::size_t i = 0; i < vp.size(); ++i) vp[i] = 0.02f * unit(101, i);
  auto& L0 = vit.w.layers[0];
  for (auto* ln : {&L0.attention.norm, &L0.mlp.norm, &vit.w.post_norm})
    for (index_t i = 0; i < ln->weight.size(); ++i) ln->weight.data()[i] = 1.0f + 0.1f * unit(102, static_cast<std::uint64_t>(i));
  qformer_model_config qc;  // Blip2QFormerConfig's sizes, the query path only
  qc.with_text = false;
  qformer_model<float> qf(qc);
  fill_hashed(qf);
  language_projection<float> proj(qc.qformer.hidden_size, llm.config().word_embed_proj_dim);
  const auto pw = proj.parameter_view();
  for (index_t i = 0; i < pw.size(); ++i) pw.data()[i] = 0.05f * unit(103, static_cast<std::uint64_t>(i));
  blip2_opt_model<float> bm{std::move(qf), std::move(proj), std::move(llm)};
  const index_t S = vc.image_size;
  host_tensor<float, 4> px({1, 3, S, S});
  for (index_t i = 0; i < px.size(); ++i) px[i] = 1.7f * unit(104, static_cast<std::uint64_t>(i));
  const std::vector<index_t> prompt = {2, 102, 1345, 9};  // [</s>] + 3 ids, as "a photo of" gives
  const double t0 = now_s();
  const host_tensor<float, 3> img = vision_forward(be, vit, px.view());
  r.vit_s = now_s() - t0;
  const auto out = blip2_opt_generate(be, bm, img.view(), std::span<const index_t>(prompt), lavis_caption_options(50118, 1));
  r.caption_s = now_s() - t0;
  r.caption_tokens = static_cast<index_t>(out[0].ids.size()) + (out[0].ended_with_eos ? 1 : 0);
  llm = std::move(bm.llm);
}

ours run_ours(onednn_backend& be, const settings& cfg) {
  ours r;
  const opt_config c = opt_2_7b(cfg.layers);
  const index_t C = c.hidden_size, F = c.ffn_dim, V = c.vocab_size, L = cfg.queries + cfg.prompt;
  reset_peak_rss();
  const double rss_before = peak_rss_gb();
  double t0 = now_s();
  opt_model<float> m(c);
  fill_hashed_opt(m);
  r.fill_s = now_s() - t0;
  r.weights_gb = static_cast<double>(opt_parameter_count(c)) * 4e-9;
  // bytes one decode step reads: every layer's parameters, the final LayerNorm, the lm_head (embed_tokens)
  const double layer_params = static_cast<double>(4 * (C * C + C) + 2 * C * F + F + C + 4 * C);
  r.read_gb = (static_cast<double>(c.num_hidden_layers) * layer_params + 2.0 * C + static_cast<double>(V * C)) * 4e-9;
  // prefill FLOP: the linears of L positions, attention (q k^T and p v over causal keys), the last row's logits
  r.prefill_gflop = (2.0 * L * c.num_hidden_layers * (4.0 * C * C + 2.0 * C * F) +
                     4.0 * c.num_hidden_layers * C * (L * (L + 1) / 2.0) + 2.0 * V * C) * 1e-9;
  // inputs: L rows of soft prompt and prompt embeddings, hashed
  std::vector<float> embeds(static_cast<std::size_t>(L * C));
  for (std::size_t i = 0; i < embeds.size(); ++i) embeds[i] = unit(image_ordinal, i);
  std::vector<index_t> mask(static_cast<std::size_t>(L), 1);
  const tensor_view<const float, 2> e(embeds.data(), {L, C});
  const tensor_view<const index_t, 2> mk(mask.data(), {1, L});
  r.prefill_ms = measure([&] { opt_session<onednn_backend>(be, m).start(e, mk, cfg.tokens); }, cfg.reps).median_s * 1e3;
  decode(be, m, e, mk, cfg.tokens, r.decode1_ms, r.decode5_ms, r.tokens);
  r.rss_gb = peak_rss_gb() - rss_before;
  if (cfg.caption) caption_end_to_end(be, m, r);
  if (cfg.bf16) {
    m.store_bfloat16(false);  // the float matrices stay allocated (their arena is one), unread from here on
    r.bf16_read_gb = r.read_gb - (static_cast<double>(c.num_hidden_layers) * (4.0 * C * C + 2.0 * C * F) + static_cast<double>(V * C)) * 2e-9;
    std::vector<index_t> toks;
    decode(be, m, e, mk, cfg.tokens, r.bf16_decode1_ms, r.bf16_decode5_ms, toks);
    while (r.bf16_same_tokens < static_cast<index_t>(toks.size()) &&
           toks[static_cast<std::size_t>(r.bf16_same_tokens)] == r.tokens[static_cast<std::size_t>(r.bf16_same_tokens)])
      ++r.bf16_same_tokens;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  settings cfg;
  cfg.peer_script = "benchmarks/peers/opt_decode_torch.py";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return flag_value(argc, argv, i); };
    if (read_peer_flag(a, next, cfg)) continue;
    if (a == "--quick") cfg.quick = true;
    else if (a == "--layers") cfg.layers = std::stol(next());
    else if (a == "--tokens") cfg.tokens = std::stol(next());
    else if (a == "--prompt") cfg.prompt = std::stol(next());
    else if (a == "--no-caption") cfg.caption = false;
    else if (a == "--no-bf16") cfg.bf16 = false;
    else {
      std::fprintf(stderr,
                   "usage: bench_opt_decode [--quick] [--layers N] [--tokens N] [--prompt N] [--reps N] [--threads N] "
                   "[--no-caption] [--no-bf16] [--no-peer] [--peer PATH] [--python PATH]\n");
      return 2;
    }
  }
  if (cfg.quick) cfg.layers = std::min<index_t>(cfg.layers, 4), cfg.tokens = std::min<index_t>(cfg.tokens, 8);
  if (cfg.reps <= 0) cfg.reps = cfg.quick ? 3 : 5;
  const int threads = set_threads(cfg.threads);
  print_banner("bench_opt_decode", cfg.quick, threads);
  onednn_backend be;
  peak_operands po(2048);
  const double peak = print_peak(be, po, "before", cfg.reps);
  const double bw = read_bandwidth_gbs(std::size_t{1} << 30, 9);
  std::printf("read bandwidth: %.1f GB/s (vector sums over 1 GiB, median of 9)\n", bw);

  const ours r = run_ours(be, cfg);
  const double limit_ms = r.read_gb / bw * 1e3;
  std::printf("\nOPT-2.7B shape, %ld layers: %.2f GB of float32 weights (generated in %.1f s); a decode step reads %.2f GB\n",
              static_cast<long>(cfg.layers), r.weights_gb, r.fill_s, r.read_gb);
  std::printf("  bandwidth limit        %8.1f ms/token (%.2f tokens/s)\n", limit_ms, 1e3 / limit_ms);
  std::printf("  prefill (%ld + %ld positions) %8.1f ms: %.1f GFLOP/s = %.0f%% of the matmul peak\n",
              static_cast<long>(cfg.queries), static_cast<long>(cfg.prompt), r.prefill_ms,
              r.prefill_gflop / r.prefill_ms * 1e3, 100.0 * r.prefill_gflop / r.prefill_ms * 1e3 / peak);
  for (const auto& [B, ms] : {std::pair{1, r.decode1_ms}, std::pair{5, r.decode5_ms}})
    std::printf("  decode batch %d          %8.1f ms/step: %.2f steps/s, %.1f GB/s = %.0f%% of the bandwidth limit\n", B,
                ms, 1e3 / ms, r.read_gb / ms * 1e3, 100.0 * limit_ms / ms);
  std::printf("  peak RSS of the model and its run %.2f GB = weights + %.2f GB\n", r.rss_gb, r.rss_gb - r.weights_gb);
  if (cfg.caption)
    std::printf("  one caption end to end: %.1f s (ViT-g/14 at 224 px %.1f s; Q-Former, prefill and %ld decode steps of 5 "
                "beams %.1f s)\n",
                r.caption_s, r.vit_s, static_cast<long>(r.caption_tokens), r.caption_s - r.vit_s);
  if (cfg.bf16) {
    const double bf16_limit_ms = r.bf16_read_gb / bw * 1e3;
    std::printf("  bfloat16 matrices (a step reads %.2f GB; limit %.1f ms):\n", r.bf16_read_gb, bf16_limit_ms);
    for (const auto& [B, ms, f32] : {std::tuple{1, r.bf16_decode1_ms, r.decode1_ms}, std::tuple{5, r.bf16_decode5_ms, r.decode5_ms}})
      std::printf("    decode batch %d        %8.1f ms/step: %.2f steps/s, %.0f%% of its bandwidth limit, %.2fx float32\n", B,
                  ms, 1e3 / ms, 100.0 * bf16_limit_ms / ms, f32 / ms);
    std::printf("    greedy tokens: the first %ld of %zu equal float32's\n", static_cast<long>(r.bf16_same_tokens),
                r.tokens.size());
  }
  std::string toks;
  for (auto t : r.tokens) toks += (toks.empty() ? "" : ",") + std::to_string(t);
  std::printf("  greedy tokens: %s\n", toks.c_str());
  std::fflush(stdout);

  if (!cfg.peer) return 0;
  std::string note = peer_unavailable(cfg.python, cfg.peer_script), json;
  if (note.empty())
    note = run_peer_command(cfg.python + " " + cfg.peer_script + " --threads " + std::to_string(threads) + " --layers " +
                                std::to_string(cfg.layers) + " --tokens " + std::to_string(cfg.tokens) + " --prompt " +
                                std::to_string(cfg.prompt) + " --reps " + std::to_string(cfg.reps),
                            [&](const std::string& line) { json += line; });
  if (!note.empty()) {
    std::printf("PyTorch peer: not run (%s)\n", note.c_str());
    return 0;
  }
  const double p_prefill = json_number(json, "prefill_ms"), p1 = json_number(json, "decode1_ms"),
               p5 = json_number(json, "decode5_ms"), p_rss = json_number(json, "rss_gb");
  std::string ptoks;
  json_field(json, "tokens", ptoks);
  const auto pt = json_numbers(json, "tokens");
  index_t agree = 0;
  for (std::size_t k = 0; k < std::min(pt.size(), r.tokens.size()); ++k, ++agree)
    if (static_cast<index_t>(pt[k]) != r.tokens[k]) break;
  std::printf("\nPyTorch peer (torch %s): prefill %.1f ms, decode batch 1 %.1f ms/step, batch 5 %.1f ms/step, peak RSS %.2f GB\n",
              [&] { std::string v; json_field(json, "torch", v); return v; }().c_str(), p_prefill, p1, p5, p_rss);
  std::printf("  ours / peer speed: prefill %.2fx, decode batch 1 %.2fx, batch 5 %.2fx\n", p_prefill / r.prefill_ms,
              p1 / r.decode1_ms, p5 / r.decode5_ms);
  std::printf("  greedy tokens: the first %ld of %zu agree (peer: %s)\n", static_cast<long>(agree), r.tokens.size(),
              ptoks.c_str());
  return 0;
}
