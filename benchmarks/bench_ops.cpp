// bench_ops: every blip2 op at BLIP-2 sizes, forward and backward, on the reference backend (float) and
// the oneDNN backend (float), with two yardsticks measured in the same run:
//   - the practical peak: a large oneDNN f32 matmul (2048 x 2048 x 2048); each matmul-like op is given as a
//     percentage of it;
//   - a raw-pointer baseline for linear forward: the reference's own loop (rows x outputs x inputs, a dot
//     product per output, parallel over rows, NOT cache-blocked) written over float*, once plain and once
//     with `omp simd` on the dot product (float sums vectorise only when reassociation is allowed).
// Usage: bench_ops [--quick]. Each (case, backend) is called once to warm up (primitive creation, first
// touch), then timed until it has max_runs samples or has spent its time budget (at least 3 samples, or
// just the warm-up call when that alone exceeds the budget). Tiny ops repeat inside a sample so a sample
// lasts >= 10 ms (2 ms with --quick). A measurement during which other processes used the CPUs is redone
// when they stop (see measure()); the last column says how busy the others were. The table gives medians. GFLOP/s counts the multiply-adds of the matmuls (2 per
// multiply-add); GB/s counts the minimum traffic (each input read once, each output written once).
// Sizes: B 8, Q 32 queries, T 32 text, C 768, NH 12, FFN 3072, N 257 image tokens of width E 1408,
// V 30522, D 256.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "bench_common.hpp"
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/loss/cross_entropy.hpp"
#include "blip2/models/qformer/masks.hpp"
#include "blip2/nn/attention.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/dropout.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/l2_normalize.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/matmul.hpp"
#include "blip2/nn/row_max.hpp"
#include "blip2/nn/softmax.hpp"

using namespace blip2;

constexpr index_t B = 8, Q = 32, T = 32, L = Q + T, C = 768, NH = 12, F = 3072, N = 257, E = 1408, V = 30522,
                  D = 256;

namespace {

struct settings {
  bool quick = false;
  int max_runs = 15;
  double budget_s = 3.0;     // per (case, backend)
  double quiet_wait_s = 900;  // in all, waiting for other processes to stop (see measure())
} cfg;

using bench::cpu_model;
using bench::cpu_now;
using bench::cpu_times;
using bench::loadavg;
using bench::median;
using bench::now_s;

struct timing {
  double median_s;
  int runs;
  double others = 0;      // cores' worth of other processes' CPU time during the measurement
  bool contended = false;  // others >= 0.1 core and >= 30 ms of CPU (3 ticks of /proc/stat)
};

// Other processes' CPU time between two readings, in cores (1.0 = one core kept busy all along; steal included).
double others_since(const cpu_times& a, const cpu_times& b) { return bench::others_cores(a, b); }

// Sleep until other processes have used < 5% of a core for 2 s; false when the total wait is used up.
int redone = 0;
double waited_quiet = 0;
bool wait_quiet() {
  int quiet = 0;
  while (quiet < 4) {
    if (waited_quiet >= cfg.quiet_wait_s) return false;
    const cpu_times a = cpu_now();
    usleep(500000);
    const cpu_times b = cpu_now();
    waited_quiet += b.wall - a.wall;
    quiet = others_since(a, b) < 0.05 ? quiet + 1 : 0;
  }
  return true;
}

template <class Fn>
timing measure_once(Fn&& fn);

// On a shared machine a parallel region waits for a descheduled thread (4-8 ms per region), so a
// contended measurement (other processes took >= 10% of a core) is thrown away and redone once they have
// stopped (up to 3 tries and cfg.quiet_wait_s of waiting in all); the table marks what stayed contended.
template <class Fn>
timing measure(Fn&& fn) {
  for (int attempt = 0;; ++attempt) {
    const cpu_times a = cpu_now();
    timing t = measure_once(fn);
    const cpu_times b = cpu_now();
    t.others = others_since(a, b);
    t.contended = t.others >= 0.1 && t.others * (b.wall - a.wall) >= 0.03;
    if (!t.contended || attempt == 2 || !wait_quiet()) return t;
    ++redone;
  }
}

// Warm up once, then sample until max_runs or the budget is spent (see the top of the file).
template <class Fn>
timing measure_once(Fn&& fn) {
  double t0 = now_s();
  fn();
  const double warm = now_s() - t0;
  if (warm >= cfg.budget_s) return {warm, 1};  // one call is the whole budget: it is the sample
  const double sample_s = cfg.quick ? 2e-3 : 1e-2;  // tiny ops repeat inside a sample at least this long
  const int inner = static_cast<int>(std::clamp(std::ceil(sample_s / std::max(warm, 1e-9)), 1.0, 10000.0));
  std::vector<double> samples;
  const double start = now_s();
  while (static_cast<int>(samples.size()) < cfg.max_runs &&
         (samples.size() < 3 || now_s() - start < cfg.budget_s)) {
    t0 = now_s();
    for (int i = 0; i < inner; ++i) fn();
    samples.push_back((now_s() - t0) / inner);
  }
  return {median(samples), static_cast<int>(samples.size())};
}

enum class unit { gflops, gbytes };

// The table is printed at the end, when the peak is known (measured before and after the ops).
struct row {
  std::string op, shape, dir, backend;
  timing t;      // runs == 0: skipped
  double work;   // flops or bytes of one call
  unit u;
  double ref_s;  // the reference's median for the speed-up column, 0 for none
};
std::vector<row> rows;

void add_row(const std::string& op, const std::string& shape, const char* dir, const char* backend, timing t,
             double work, unit u, double ref_s) {
  rows.push_back({op, shape, dir, backend, t, work, u, ref_s});
  std::fputc('.', stderr);  // progress
}

void print_table(double peak_gflops) {
  std::printf("%-24s %-30s %-3s %-13s %4s %10s %8s %-7s %6s %8s %6s\n", "op", "shape", "dir", "backend", "runs",
              "median ms", "rate", "unit", "%peak", "vs ref", "others");
  std::printf("%s\n", std::string(129, '-').c_str());
  for (const row& r : rows) {
    std::printf("%-24s %-30s %-3s %-13s ", r.op.c_str(), r.shape.c_str(), r.dir.c_str(), r.backend.c_str());
    if (r.t.runs == 0) {
      std::printf("skipped in --quick (seconds per call)\n");
      continue;
    }
    const double rate = r.work / r.t.median_s * 1e-9;
    char peak[16] = "", vs[16] = "";
    if (r.u == unit::gflops) std::snprintf(peak, sizeof peak, "%5.1f%%", 100 * rate / peak_gflops);
    if (r.ref_s > 0) std::snprintf(vs, sizeof vs, "%7.2fx", r.ref_s / r.t.median_s);
    std::printf("%4d %10.4f %8.2f %-7s %6s %8s %5.0f%%%s\n", r.t.runs, r.t.median_s * 1e3, rate,
                r.u == unit::gflops ? "GFLOP/s" : "GB/s", peak, vs, 100 * r.t.others, r.t.contended ? " *" : "");
  }
}


onednn_backend* dnn = nullptr;

// fn(be) on the reference (unless skip_ref) and on oneDNN; rows printed, the reference time returned.
template <class Fn>
double run_case(const std::string& op, const std::string& shape, const char* dir, double work, unit u, Fn&& fn,
             bool skip_ref = false) {
  reference_backend ref;
  timing r{0, 0};
  if (!skip_ref) r = measure([&] { fn(ref); });
  add_row(op, shape, dir, "reference", r, work, u, 0);
  add_row(op, shape, dir, "onednn", measure([&] { fn(*dnn); }), work, u, r.median_s);
  return r.median_s;
}

// Seeded uniform [-1, 1) floats.
template <std::size_t R>
host_tensor<float, R> rnd(const extents_t<R>& shape, std::uint64_t seed, float scale = 1.0f) {
  host_tensor<float, R> t(shape);
  for (index_t i = 0; i < t.size(); ++i) t[i] = scale * (2.0f * uniform_float(seed, static_cast<std::uint64_t>(i)) - 1.0f);
  return t;
}

std::string dims(std::initializer_list<index_t> d) {
  std::string s = "(";
  for (index_t x : d) s += (s.size() > 1 ? "," : "") + std::to_string(x);
  return s + ")";
}

// The raw-pointer baselines: out (R, N) = inp (R, K) weight^T (K, N) + bias, the reference's loop order.
void raw_linear(float* out, const float* inp, const float* w, const float* bias, index_t R, index_t K, index_t Nn) {
#pragma omp parallel for schedule(static)
  for (index_t r = 0; r < R; ++r)
    for (index_t n = 0; n < Nn; ++n) {
      float acc = bias[n];
      for (index_t k = 0; k < K; ++k) acc += inp[r * K + k] * w[n * K + k];
      out[r * Nn + n] = acc;
    }
}
void raw_linear_simd(float* out, const float* inp, const float* w, const float* bias, index_t R, index_t K,
                     index_t Nn) {
#pragma omp parallel for schedule(static)
  for (index_t r = 0; r < R; ++r)
    for (index_t n = 0; n < Nn; ++n) {
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (index_t k = 0; k < K; ++k) acc += inp[r * K + k] * w[n * K + k];
      out[r * Nn + n] = bias[n] + acc;
    }
}

void bench_linear(const char* what, index_t R, index_t K, index_t Nn) {
  auto x = rnd<2>({R, K}, 1), w = rnd<2>({Nn, K}, 2, 0.05f), dout = rnd<2>({R, Nn}, 4);
  auto b = rnd<1>({Nn}, 3);
  host_tensor<float, 2> out({R, Nn}), dx({R, K}), dw({Nn, K});
  host_tensor<float, 1> db({Nn});
  const std::string op = std::string("linear ") + what;
  const std::string shape = dims({R, K}) + " -> " + dims({R, Nn});
  const double flops = 2.0 * R * K * Nn;
  const double ref_s = run_case(op, shape, "fwd", flops, unit::gflops, [&](auto& be) { linear_forward(be, out, x, w, b); });
  add_row(op, shape, "fwd", "raw loop", measure([&] { raw_linear(out.data(), x.data(), w.data(), b.data(), R, K, Nn); }),
            flops, unit::gflops, ref_s);
  add_row(op, shape, "fwd", "raw loop+simd",
            measure([&] { raw_linear_simd(out.data(), x.data(), w.data(), b.data(), R, K, Nn); }), flops,
            unit::gflops, ref_s);
  // the reference backward walks columns of dout and inp (dweight) and of weight (dinp): seconds per call at
  // the larger shapes, so --quick leaves it out there
  run_case(op, shape, "bwd", 2 * flops, unit::gflops, [&](auto& be) { linear_backward(be, dx, dw, db, dout, x, w); },
        cfg.quick && flops > 1e9);
}

template <class Mask, class Pad>
void bench_attention(const char* what, index_t Tq, index_t S, const Mask& mask, const Pad& pad) {
  auto q = rnd<3>({B, Tq, C}, 5), k = rnd<3>({B, S, C}, 6), v = rnd<3>({B, S, C}, 7), dout = rnd<3>({B, Tq, C}, 8);
  host_tensor<float, 3> out({B, Tq, C}), dq({B, Tq, C}), dk({B, S, C}), dv({B, S, C});
  host_tensor<float, 4> probs({B, NH, Tq, S});
  const attention_cache<float> cache{probs.view()};
  const std::string op = std::string("attention ") + what;
  const std::string shape = "B" + std::to_string(B) + " T" + std::to_string(Tq) + " S" + std::to_string(S) +
                            " C" + std::to_string(C) + " NH" + std::to_string(NH);
  const double flops = 4.0 * B * Tq * S * C;  // q k^T and probs v
  run_case(op, shape, "fwd", flops, unit::gflops,
        [&](auto& be) { attention_forward(be, out, cache, q, k, v, NH, mask, pad); });
  run_case(op, shape, "bwd", 2 * flops, unit::gflops,
        [&](auto& be) { attention_backward(be, dq, dk, dv, dout, q, k, v, cache, NH, mask, pad); });
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (quick) cfg = {true, 5, 0.3, 30};
  const double start = now_s();
  const cpu_times cpu0 = cpu_now();
  int threads = 1;
#if defined(_OPENMP)
  threads = omp_get_max_threads();
#endif
  std::printf("bench_ops%s: CPU %s, %d threads (omp_get_max_threads), load average %s (1, 5, 15 min)\n",
              quick ? " --quick" : "", cpu_model().c_str(), threads, loadavg().c_str());
  std::printf("samples: warm-up + up to %d runs or %.1f s per (case, backend); medians\n\n", cfg.max_runs, cfg.budget_s);
  onednn_backend be;
  dnn = &be;

  // ---- the practical peak: one large f32 matmul through oneDNN (again at the end: a busy machine shows) ----
  const index_t P = 2048;
  auto pa = rnd<2>({P, P}, 10), pb = rnd<2>({P, P}, 11);
  host_tensor<float, 2> pc({P, P});
  auto peak = [&] {
    const settings saved = cfg;
    cfg.max_runs = 10, cfg.budget_s = 1.5;  // the yardstick gets more samples than the ops
    const timing t = measure([&] { matmul(be, pc, pa, pb); });
    cfg = saved;
    return std::pair{t, 2.0 * P * P * P / t.median_s * 1e-9};
  };
  const auto [peak_start_t, peak_start] = peak();

  // ---- linear: the Q-Former's four shapes ----
  bench_linear("self q/k/v/o", B * L, C, C);   // [queries ; text] rows
  bench_linear("cross k/v (image)", B * N, E, C);
  bench_linear("FFN up", B * Q, C, F);         // query FFN
  bench_linear("FFN down", B * Q, F, C);

  // ---- matmul: ITC similarity and the attention-score shape ----
  {
    auto img = rnd<2>({B * Q, D}, 12), txt = rnd<2>({B, D}, 13);
    host_tensor<float, 2> sim({B * Q, B});
    run_case("matmul ITC sim", "(256,256) x (256,8)^T", "fwd", 2.0 * B * Q * D * B, unit::gflops,
          [&](auto& b) { matmul(b, sim, img, transpose(txt.view())); });
    auto qh = rnd<3>({B * NH, L, C / NH}, 14), kh = rnd<3>({B * NH, L, C / NH}, 15);
    host_tensor<float, 3> s({B * NH, L, L});
    run_case("matmul q k^T", "96 x (64,64) x (64,64)^T", "fwd", 2.0 * B * NH * L * L * (C / NH), unit::gflops,
          [&](auto& b) { matmul(b, s, qh, transpose(kh.view())); });
  }

  // ---- attention: self (multimodal causal, padded text) and cross (queries to the image) ----
  {
    host_tensor<float, 2> pad({B, L}, 1.0f);
    for (index_t b = 0; b < B; ++b)
      for (index_t t = Q + 8 + 3 * b; t < L; ++t) pad(b, t) = 0.0f;  // captions of 8, 11, ... tokens
    bench_attention("self", L, L, multimodal_causal_mask{Q}, pad);
    bench_attention("cross", Q, N, bidirectional{}, no_padding);
  }

  // ---- memory-bound ops ----
  {
    auto x = rnd<2>({B * L, C}, 20), dout = rnd<2>({B * L, C}, 21);
    auto w = rnd<1>({C}, 22), b = rnd<1>({C}, 23);
    host_tensor<float, 2> out({B * L, C}), dx({B * L, C});
    host_tensor<float, 1> mean({B * L}), rstd({B * L}), dw({C}), db({C});
    const layer_norm_cache<float> cache{mean.view(), rstd.view()};
    const double n = double(B * L) * C;
    run_case("layer_norm", dims({B * L, C}), "fwd", 8 * n, unit::gbytes,
          [&](auto& be) { layer_norm_forward(be, out, cache, x, w, b, 1e-12); });
    run_case("layer_norm", dims({B * L, C}), "bwd", 12 * n, unit::gbytes,
          [&](auto& be) { layer_norm_backward(be, dx, dw, db, dout, x, w, cache); });
    run_case("dropout p=0.1", dims({B * L, C}), "fwd", 8 * n, unit::gbytes,
          [&](auto& be) { dropout_forward(be, out, x, 0.1, 42); });
    run_case("dropout p=0.1", dims({B * L, C}), "bwd", 8 * n, unit::gbytes,
          [&](auto& be) { dropout_backward(be, dx, dout, 0.1, 42); });
    run_case("axpy (residual)", dims({B * L, C}), "fwd", 12 * n, unit::gbytes, [&](auto& be) { axpy(be, out, x); });
    host_tensor<float, 3> hq({B, Q, C});
    const tensor_view<const float, 3> queries(x.data(), {B, Q, C}, {L * C, C, 1});  // h[:, :Q] of (B, L, C)
    run_case("copy (query slice)", dims({B, L, C}) + "[:, :32]", "fwd", 8.0 * B * Q * C, unit::gbytes,
          [&](auto& be) { copy(be, hq, queries); });
  }
  {
    auto x = rnd<2>({B * Q, F}, 24), dout = rnd<2>({B * Q, F}, 25);
    host_tensor<float, 2> out({B * Q, F}), dx({B * Q, F});
    const double n = double(B * Q) * F;
    run_case("gelu", dims({B * Q, F}), "fwd", 8 * n, unit::gbytes, [&](auto& be) { gelu_forward(be, out, x); });
    run_case("gelu", dims({B * Q, F}), "bwd", 12 * n, unit::gbytes, [&](auto& be) { gelu_backward(be, dx, dout, x); });
  }
  {
    const index_t R = B * NH * Q;  // cross-attention probability rows
    auto x = rnd<2>({R, N}, 26, 4.0f), dout = rnd<2>({R, N}, 27);
    host_tensor<float, 2> out({R, N}), dx({R, N});
    const double n = double(R) * N;
    run_case("softmax", dims({R, N}), "fwd", 8 * n, unit::gbytes, [&](auto& be) { softmax_forward(be, out, x); });
    softmax_forward(*dnn, out, x);
    run_case("softmax", dims({R, N}), "bwd", 12 * n, unit::gbytes, [&](auto& be) { softmax_backward(be, dx, dout, out); });
  }
  {
    host_tensor<index_t, 2> ids({B, T});
    for (index_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<index_t>(uniform_float(30, i) * V);
    auto table = rnd<2>({V, C}, 31);
    auto dout = rnd<3>({B, T, C}, 32);
    host_tensor<float, 3> out({B, T, C});
    host_tensor<float, 2> dtable({V, C});
    const double n = double(B * T) * C;
    run_case("embedding (words)", dims({B, T}) + " of " + dims({V, C}), "fwd", 8 * n, unit::gbytes,
          [&](auto& be) { embedding_forward(be, out, ids, table); });
    run_case("embedding (words)", dims({B, T}) + " of " + dims({V, C}), "bwd", 12 * n, unit::gbytes,
          [&](auto& be) { embedding_backward(be, dtable, dout, ids); });
  }
  {
    auto x = rnd<2>({B * Q, D}, 33), dout = rnd<2>({B * Q, D}, 34);
    host_tensor<float, 2> out({B * Q, D}), dx({B * Q, D});
    host_tensor<float, 1> norm({B * Q});
    const l2_normalize_cache<float> cache{norm.view()};
    const double n = double(B * Q) * D;
    run_case("l2_normalize", dims({B * Q, D}), "fwd", 8 * n, unit::gbytes,
          [&](auto& be) { l2_normalize_forward(be, out, x, cache); });
    run_case("l2_normalize", dims({B * Q, D}), "bwd", 12 * n, unit::gbytes,
          [&](auto& be) { l2_normalize_backward(be, dx, dout, x, cache); });
  }
  {
    auto sim = rnd<2>({B * B, Q}, 35);
    auto dmax = rnd<1>({B * B}, 36);
    host_tensor<float, 1> mx({B * B});
    host_tensor<index_t, 1> arg({B * B});
    host_tensor<float, 2> dsim({B * B, Q});
    const double n = double(B * B) * Q;
    run_case("row_max (ITC)", dims({B * B, Q}), "fwd", 4 * n + 12.0 * B * B, unit::gbytes,
          [&](auto& be) { row_max_forward(be, mx, arg, sim); });
    run_case("row_max (ITC)", dims({B * B, Q}), "bwd", 4 * n + 12.0 * B * B, unit::gbytes,
          [&](auto& be) { row_max_backward(be, dsim, dmax, arg); });
  }
  {
    const index_t R = B * T;
    auto logits = rnd<2>({R, V}, 37, 5.0f);
    host_tensor<index_t, 1> targets({R});
    for (index_t r = 0; r < R; ++r) targets[r] = r % T >= 24 ? -100 : static_cast<index_t>(uniform_float(38, r) * V);
    host_tensor<float, 1> loss({1}), row_loss({R}), lse({R}), dloss({1}, 1.0f);
    host_tensor<index_t, 1> count({1});
    host_tensor<float, 2> dlogits({R, V});
    const cross_entropy_cache<float> cache{lse.view(), count.view()};
    const double n = double(R) * V;
    run_case("cross_entropy (ITG)", dims({R, V}) + " eps 0.1", "fwd", 4 * n, unit::gbytes,
          [&](auto& be) { cross_entropy_forward(be, loss, row_loss, cache, logits, targets, 0.1); });
    run_case("cross_entropy (ITG)", dims({R, V}) + " eps 0.1", "bwd", 8 * n, unit::gbytes,
          [&](auto& be) { cross_entropy_backward(be, dlogits, dloss, logits, targets, cache, 0.1); });
  }
  const auto [peak_end_t, peak_end] = peak();
  const cpu_times cpu1 = cpu_now();
  std::fputc('\n', stderr);

  const double peak_gflops = std::max(peak_start, peak_end);
  std::printf("practical peak: oneDNN f32 matmul 2048 x 2048 x 2048, before the ops %.1f ms (median of %d) = %.1f "
              "GFLOP/s, after %.1f ms (median of %d) = %.1f GFLOP/s; %%peak uses the higher\n\n",
              peak_start_t.median_s * 1e3, peak_start_t.runs, peak_start, peak_end_t.median_s * 1e3, peak_end_t.runs,
              peak_end);
  print_table(peak_gflops);
  const double wall = now_s() - start;
  std::printf("\ntotal %.1f s; load average at the end %s\n", wall, loadavg().c_str());
  std::printf("CPU time during the run: this program %.1f s, other processes %.1f s, of %.1f s x %d cores; %d "
              "measurements redone after waiting %.0f s for other processes to stop\n",
              cpu1.self - cpu0.self, others_since(cpu0, cpu1) * (cpu1.wall - cpu0.wall), wall,
              static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)), redone, waited_quiet);
  const auto marked = std::count_if(rows.begin(), rows.end(), [](const row& r) { return r.t.contended; });
  if (peak_start_t.contended || peak_end_t.contended || marked > 0)
    std::printf("WARNING: %ld rows (*) and %d peak measurements ran while other processes took >= 10%% of a core: "
                "their times are not trustworthy (rerun when the machine is idle)\n",
                static_cast<long>(marked), int(peak_start_t.contended) + int(peak_end_t.contended));
  std::printf("others: other processes' CPU use during each measurement, in %% of one core\n");
  return 0;
}
