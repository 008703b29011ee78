// bench_gpu: the CUDA backend at BLIP-2 size against PyTorch eager on the same GPU, in one run.
//
//   - the practical peak: one 8192 x 8192 x 8192 product through blip2::matmul on the CUDA backend, float32
//     (TF32 off: what the default kernels compute) and bf16 inputs with f32 accumulation;
//   - the Q-Former image pass (encode_image_kv + qformer_forward with the 32 queries, evaluation mode; 12
//     layers, C 768, F 3072, N 257 image tokens of width E 1408), B = 32 by default, float32 and bf16
//     (cuda_backend::matmul_precision::bf16: the inputs of every product rounded to bf16);
//   - PyTorch on the same GPU: benchmarks/peers/image_pass_torch.py --device cuda, float32 (TF32 off) and
//     bf16 autocast, on the SAME weights and images (both sides make them from one counter-based hash), so
//     the B = 1 outputs are compared too.
// Printed: ms per pass (median), TFLOP/s and its share of the peak, and the ratio to PyTorch (> 1: faster).
// The stage-1 step is not here yet: stage1_step runs on host memory (its losses and samplers), see README.
// Usage: bench_gpu [--reps N] [--batches 32] [--no-peer] [--peer PATH] [--python PATH]
// Without a usable GPU it says so and exits with status 0 (nothing to measure).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_basics.hpp"
#include "blip2/backend/cuda/cuda.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/models/to_space.hpp"
#include "blip2/nn/matmul.hpp"
#include "blip2/nn/transfer.hpp"

#ifndef BLIP2_PEER_SCRIPT
#define BLIP2_PEER_SCRIPT "benchmarks/peers/image_pass_torch.py"
#endif

using namespace blip2;
using namespace blip2::bench;

namespace {

constexpr index_t Q = 32, N = 257, E = 1408;

struct settings : peer_flags {
  std::vector<index_t> batches{32};
  settings() {
    reps = 20;
    peer_script = BLIP2_PEER_SCRIPT;
  }
} cfg;

// A timed GPU call: fn() queues the work, synchronize() waits for it.
template <class Fn>
timing gpu_measure(cuda_backend& be, Fn&& fn, int reps) {
  return measure([&] { fn(), be.synchronize(); }, reps);
}

// The peak of one n^3 product on the backend as configured (f32 or bf16 inputs), in TFLOP/s.
double peak_tflops(cuda_backend& be, index_t n) {
  host_tensor<float, 2> a({n, n}), b({n, n});
  for (index_t i = 0; i < a.size(); ++i) a[i] = unit(7, i), b[i] = unit(8, i);
  auto da = to_backend_memory(be, detail::as_const(a.view())), db = to_backend_memory(be, detail::as_const(b.view()));
  space_tensor<float, 2, cuda_space> dc({n, n});
  const timing t = gpu_measure(be, [&] { matmul(be, dc.view(), da.view(), db.view()); }, 5);
  return 2.0 * double(n) * n * n / t.median_s * 1e-12;
}

struct pass_result {
  timing t;
  std::vector<float> out;  // (B, Q, C) of the last run
};

pass_result image_pass(cuda_backend& be, const qformer_model<float, cuda_space>& m, index_t B) {
  host_tensor<float, 3> images({B, N, E});
  for (index_t i = 0; i < images.size(); ++i) images[i] = unit(image_ordinal, static_cast<std::uint64_t>(i));
  const auto img = to_backend_memory(be, detail::as_const(images.view()));
  image_kv_state<float, cuda_space> kv;
  qformer_pass_state<float, cuda_space> st;
  auto run = [&] {
    encode_image_kv(be, m, kv, img.view());
    qformer_pass_inputs<float, cuda_space> in;
    in.batch = B;
    in.queries = true;
    in.image = &kv;
    qformer_forward(be, m, st, in);
  };
  pass_result r;
  r.t = gpu_measure(be, run, cfg.reps);
  const index_t C = m.config().qformer.hidden_size;
  space_tensor<float, 3, cuda_space> q({B, Q, C});
  copy(be, q.view(), detail::as_const(by_batch(row_range(st.output(), 0, Q * B), B)));
  const auto h = to_host(be, q.view());
  r.out.assign(h.data(), h.data() + h.size());
  return r;
}

struct peer_rows {
  std::string note, gpu;
  std::vector<std::pair<std::string, std::pair<index_t, double>>> rows;  // dtype -> (B, median ms)
  double find(const std::string& dtype, index_t B) const {
    for (const auto& [d, r] : rows)
      if (d == dtype && r.first == B) return r.second;
    return NAN;
  }
};

peer_rows run_peer(const std::string& dump) {
  peer_rows p;
  p.note = peer_unavailable(cfg.python, cfg.peer_script);
  if (!p.note.empty()) return p;
  std::string batches = "1";
  for (index_t B : cfg.batches) batches += "," + std::to_string(B);
  const std::string cmd = cfg.python + " " + cfg.peer_script + " --device cuda --batches " + batches + " --reps " +
                          std::to_string(cfg.reps) + " --bf16 --dump " + dump;
  p.note = run_peer_command(cmd, [&](const std::string& line) {
    std::string v, d;
    if (json_field(line, "gpu", v)) p.gpu = v;
    if (json_field(line, "dtype", d) && json_field(line, "B", v)) p.rows.push_back({d, {std::stoll(v), json_number(line, "median_ms")}});
  });
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (read_peer_flag(a, [&] { return flag_value(argc, argv, i); }, cfg)) continue;
    if (a == "--batches") {
      cfg.batches = split_indices(flag_value(argc, argv, i));
    } else {
      std::fprintf(stderr, "usage: bench_gpu [--reps N] [--batches 32] [--no-peer] [--peer PATH] [--python PATH]\n");
      return 2;
    }
  }
  std::string why;
  if (!cuda_available(&why)) {
    std::printf("bench_gpu: skipped: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  cuda_backend be;
  std::printf("bench_gpu on %s; each case: 1 untimed run, then %d timed; medians\n\n", be.device_name().c_str(), cfg.reps);

  // ---- the practical peak ----
  const double peak_f32 = peak_tflops(be, 8192);
  be.set_matmul(cuda_backend::matmul_precision::bf16);
  const double peak_bf16 = peak_tflops(be, 8192);
  be.set_matmul(cuda_backend::matmul_precision::f32);
  std::printf("practical peak (8192^3 product through blip2::matmul): float32 %.1f TFLOP/s, bf16 inputs %.1f TFLOP/s\n\n",
              peak_f32, peak_bf16);

  // ---- the model: BLIP-2 sizes, hashed weights (the peer makes the same), no text side ----
  qformer_model_config mc;
  mc.with_text = false;
  qformer_model<float> host_model(mc);
  fill_hashed(host_model);
  const auto m = to_space<cuda_space>(be, host_model);
  const auto& qc = mc.qformer;

  // ---- PyTorch on the same GPU ----
  const std::filesystem::path dump = std::filesystem::temp_directory_path() / ("bench_gpu_" + std::to_string(getpid()));
  peer_rows peer;
  if (cfg.peer) peer = run_peer(dump.string());
  if (!peer.note.empty()) std::printf("PyTorch peer: not run: %s\n", peer.note.c_str());

  std::printf("\n%-28s %4s %10s %9s %8s %12s\n", "image pass", "B", "ms", "TFLOP/s", "% peak", "vs PyTorch");
  for (const bool bf16 : {false, true}) {
    be.set_matmul(bf16 ? cuda_backend::matmul_precision::bf16 : cuda_backend::matmul_precision::f32);
    const double peak = bf16 ? peak_bf16 : peak_f32;
    const std::string peer_dtype = bf16 ? "bf16 autocast" : "float32";
    std::vector<index_t> batches = cfg.batches;
    batches.insert(batches.begin(), 1);
    for (index_t B : batches) {
      const pass_result r = image_pass(be, m, B);
      const double tflops = image_pass_flops(qc, B, Q, N, E).total() / r.t.median_s * 1e-12;
      const double torch_ms = peer.find(peer_dtype, B);
      std::printf("%-28s %4ld %10.3f %9.1f %7.1f%% %11.2fx\n", bf16 ? "blip2 cuda, bf16 inputs" : "blip2 cuda, float32",
                  static_cast<long>(B), r.t.median_s * 1e3, tflops, 100 * tflops / peak, torch_ms / (r.t.median_s * 1e3));
      if (std::isfinite(torch_ms))
        std::printf("%-28s %4ld %10.3f %9.1f %7.1f%%\n", ("pytorch " + peer_dtype).c_str(), static_cast<long>(B),
                    torch_ms, image_pass_flops(qc, B, Q, N, E).total() / (torch_ms * 1e-3) * 1e-12,
                    100 * image_pass_flops(qc, B, Q, N, E).total() / (torch_ms * 1e-3) * 1e-12 / peak);
      if (B == 1 && cfg.peer) {
        const auto want = read_floats(dump / (bf16 ? "torch_bf16.bin" : "torch_f32.bin"));
        if (want.size() == r.out.size())
          std::printf("  B = 1 output against PyTorch's %s: max |diff| / max |ref| = %.2e\n", peer_dtype.c_str(),
                      compare(r.out.data(), want.data(), want.size()).max_rel);
        else
          std::printf("  B = 1 output against PyTorch's %s: no dump to compare with\n", peer_dtype.c_str());
      }
    }
  }
  std::filesystem::remove_all(dump);
  std::printf("\nstage-1 step on the GPU: not measured (stage1_step keeps its losses and samplers in host memory)\n");
  return 0;
}
