// bench_vision: seconds per image of the frozen image encoder at BLIP-2 size (EVA ViT-g/14: 224 px,
// N 257 tokens, E 1408, F 6144, 16 heads, 39 layers), float32 on the oneDNN backend, random weights.
//
// Beside it, in the same run, the yardstick: the practical peak of this machine, a large oneDNN f32
// matmul (2048 x 2048 x 2048), measured before and after the encoder; the encoder's rate is given as a
// percentage of the higher one. FLOPs count the matmuls only (2 per multiply-add): per layer the four
// linears 2 N (3E E + E E + 2 E F) and attention's two products 2 (2 N N E); plus the patch embedding
// 2 (N - 1) E 3 P P. LayerNorm, GELU, softmax and the residual adds are not counted (they are <1% of the
// FLOPs, but not of the time).
// Weights: every layer views the same parameters (vision_storage::shared_layers): the work of 39 layers in
// the memory of one (a layer is 101 MB in float32, far beyond any cache, so sharing does not make the
// weights cache-resident; the real model would need 3.9 GB).
// bfloat16: reported as available or not (models/vit/bf16.hpp); its path is not implemented.
//
// Usage: bench_vision [--quick] [--layers L] [--batch B] [--reps R]
//   --quick   4 layers instead of 39, 3 timed runs (the seconds per image are then scaled by 39 / 4 to
//             estimate the full encoder; the scaled figure is printed as an estimate)
//   default   39 layers, 3 timed runs; one warm-up run first (primitive creation, first touch)
// Threads: OpenMP's (OMP_NUM_THREADS); the other processes' CPU use during the runs is printed, since a
// shared machine slows everything down.
//
// Measured (2026-11-27, AMD EPYC with AVX2 only, oneDNN 2.6.3 dispatching avx2, g++ 12 -O3, a machine
// shared with other jobs: 1-1.6 cores of other load during every run, and the matmul peak itself varied
// from 22 to 67 GFLOP/s between runs, so compare with the peak of the same run):
//   OMP_NUM_THREADS=2, batch 1, 39 layers:   11.6 s per image, 45 GFLOP/s = 91% of that run's peak (49)
//   OMP_NUM_THREADS=2, batch 8, 8 layers:    8.2 s per image (39-layer estimate), 64 GFLOP/s = 96% (67)
//   OMP_NUM_THREADS=1, batch 1, 39 layers:   22.9 s per image, 23 GFLOP/s = 62% (37)
// Batches help: the linears then have M = 257 B rows instead of 257. bfloat16: not available on avx2.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/models/vit/vision_transformer.hpp"

using namespace blip2;

namespace {

using bench::cpu_now;
using bench::median;
using bench::now_s;

// Cores' worth of CPU that other processes used between a and b (steal time not counted).
double others(const bench::cpu_times& a, const bench::cpu_times& b) { return bench::others_cores(a, b, false); }

// Fill with uniform values in [-scale, scale) from the counter-based RNG.
void fill(std::span<float> x, std::uint64_t seed, float scale, float offset = 0) {
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = offset + scale * (2 * uniform_float(seed, i) - 1);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  index_t layers = -1, batch = 1;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atol(argv[++i]);
    };
    if (a == "--quick") quick = true;
    else if (a == "--layers") layers = value();
    else if (a == "--batch") batch = value();
    else if (a == "--reps") reps = static_cast<int>(value());
    else {
      std::fprintf(stderr, "usage: bench_vision [--quick] [--layers L] [--batch B] [--reps R]\n");
      return 2;
    }
  }
  vision_config cfg;  // ViT-g/14 at 224 px
  const index_t full_layers = cfg.num_hidden_layers;
  if (layers < 0) layers = quick ? 4 : full_layers;
  if (layers < 1 || batch < 1 || reps < 1) {
    std::fprintf(stderr, "--layers, --batch and --reps must be >= 1\n");
    return 2;
  }
  cfg.num_hidden_layers = layers;
  const int threads = bench::set_threads(0);
  onednn_backend be;
  std::printf("bench_vision%s: CPU %s, %d threads, oneDNN ISA %s\n", quick ? " --quick" : "", bench::cpu_model("?").c_str(),
              threads, onednn_cpu_isa_name().c_str());
  std::printf("ViT-g/14: %ld px, N %ld, E %ld, F %ld, %ld heads, %ld of %ld layers, batch %ld, float32 oneDNN, "
              "random weights (layers share one set)\n",
              static_cast<long>(cfg.image_size), static_cast<long>(cfg.num_positions()), static_cast<long>(cfg.hidden_size),
              static_cast<long>(cfg.intermediate_size), static_cast<long>(cfg.num_attention_heads),
              static_cast<long>(layers), static_cast<long>(full_layers), static_cast<long>(batch));

  // ---- the model: random weights of the scale of a trained ViT (O(1) activations) ----
  vision_model<float> m(cfg, vision_storage::shared_layers);
  fill(m.parameters(), 1, 0.02f);
  auto& L0 = m.w.layers[0];
  for (auto* ln : {&L0.attention.norm, &L0.mlp.norm, &m.w.post_norm}) fill({ln->weight.data(), static_cast<std::size_t>(ln->weight.size())}, 2, 0.1f, 1.0f);
  const index_t S = cfg.image_size, N = cfg.num_positions(), E = cfg.hidden_size, F = cfg.intermediate_size;
  host_tensor<float, 4> px({batch, 3, S, S});  // (B, 3, S, S)
  fill({px.data(), static_cast<std::size_t>(px.size())}, 3, 1.7f);
  host_tensor<float, 3> out({batch, N, E});    // (B, N, E)
  vision_state<float> st;

  // ---- FLOPs per image ----
  const double layer_flops = 2.0 * N * (3.0 * E * E + 1.0 * E * E + 2.0 * E * F) + 2.0 * (2.0 * N * N * E);
  const double patch_flops = 2.0 * (N - 1) * E * cfg.patch_dim();
  const double flops = layer_flops * static_cast<double>(layers) + patch_flops;

  // ---- the yardstick: one large oneDNN f32 matmul ----
  const index_t P = 2048;
  host_tensor<float, 2> pa({P, P}), pb({P, P}), pc({P, P});
  fill({pa.data(), static_cast<std::size_t>(pa.size())}, 4, 1.0f);
  fill({pb.data(), static_cast<std::size_t>(pb.size())}, 5, 1.0f);
  auto peak = [&] {
    matmul(be, pc.view(), pa.view(), pb.view());  // warm-up
    std::vector<double> t;
    for (int r = 0; r < 7; ++r) {
      const double t0 = now_s();
      matmul(be, pc.view(), pa.view(), pb.view());
      t.push_back(now_s() - t0);
    }
    return 2.0 * P * P * P / median(t) * 1e-9;
  };
  const double peak_before = peak();

  // ---- the encoder ----
  const auto c0 = cpu_now();
  vision_forward(be, m, st, px.view(), out.view());  // warm-up: primitives, first touch
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    vision_forward(be, m, st, px.view(), out.view());
    times.push_back(now_s() - t0);
  }
  const auto c1 = cpu_now();
  const double peak_after = peak();
  const double peak_gflops = std::max(peak_before, peak_after);

  double checksum = 0;
  for (index_t i = 0; i < out.size(); ++i) checksum += out.data()[i];
  const double per_image = median(times) / static_cast<double>(batch);
  const double gflops = flops / per_image * 1e-9;
  std::printf("\npeak: oneDNN f32 matmul %ld^3: %.1f GFLOP/s before, %.1f after (median of 7); %%peak uses the higher\n",
              static_cast<long>(P), peak_before, peak_after);
  std::printf("encoder: %.2f GFLOP per image (matmuls); runs (s):", flops * 1e-9);
  for (double t : times) std::printf(" %.3f", t);
  std::printf("\n  median %.3f s per image = %.1f GFLOP/s = %.0f%% of the matmul peak\n", per_image, gflops,
              100 * gflops / peak_gflops);
  if (layers != full_layers)
    std::printf("  estimate for all %ld layers: %.2f s per image (scaled by the FLOPs)\n", static_cast<long>(full_layers),
                per_image * (layer_flops * static_cast<double>(full_layers) + patch_flops) / flops);
  std::printf("  other processes used %.2f cores during the encoder runs%s\n", others(c0, c1),
              others(c0, c1) > 0.1 ? " (contended: the figure is pessimistic)" : "");
  std::printf("  checksum %.6g (finite: %s)\n", checksum, std::isfinite(checksum) ? "yes" : "NO");
  std::printf("bfloat16: %s\n", onednn_bf16_matmul_available(be)
                                    ? "oneDNN has a bf16 matmul on this CPU, but the bf16 encoder path is not implemented"
                                    : "not available: oneDNN 2.6 has no bf16 matmul on this CPU's ISA");
  return 0;
}
