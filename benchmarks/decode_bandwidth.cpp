// decode_bandwidth: the linear layers of one decode step of a frozen OPT-2.7B, float32 weights
// (linear_forward: our streaming kernel at these shapes, and oneDNN's matmul forced beside it) against
// bfloat16 weights (our linear_bf16_forward, the same kernel), against the machine's memory bandwidth.
//
// A decode step multiplies M = 1 row per sequence (greedy) or M = 5 (5 beams) by every weight matrix: 2 M
// flops per weight read, so its time is the weights' bytes over the bandwidth. Printed:
//   - the CPU, oneDNN's ISA, the threads, which streaming kernel runs (f32 and bf16);
//   - STREAM-like bandwidth over a pool far larger than the caches (default 2 GiB: this machine's VM
//     reports a 508 MiB L3, and reads of 256 MiB ran at 3-4x the DRAM rate): read (a sum of 64-bit words
//     in four independent AVX2 sums), copy (half to half) and triad (a = b + 3 c over thirds); medians;
//   - the f32 -> bf16 conversion of weights (to_bfloat16), GB/s of float32 read;
//   - for OPT-2.7B's decode shapes (q/k/v/out 2560x2560, fc1 10240x2560, fc2 2560x10240, lm_head
//     50272x2560) at M = 1 and 5: the median time of linear_forward (f32: as it runs, on the streaming
//     kernel; and with be.f32_kernel() = reference, oneDNN's matmul) and linear_bf16_forward, the
//     effective GB/s (weight bytes / time) and its fraction of the read rate of a plain sum over as many
//     bytes as the bf16 weights. The kinds of call (the sum too) are timed in turn, call by call (the VM's
//     bandwidth moves from minute to minute), and each call reads the pool's bytes after the last call's,
//     so weights come from memory, as in a real decode whose 5.3-10.6 GB of weights no cache holds (a
//     warm 26 MB matrix would run from cache);
//   - a whole-model estimate: one layer's six linears x 32 + lm_head per step, as steps/s for f32 (ours
//     and oneDNN's) and bf16
//     (at M = 5 a step makes one token for each of the 5 beams), the bf16/f32 ratio, and the limit (the
//     same bytes at each row's read rate). Attention, LayerNorm and the KV cache are left out.
// --results FILE writes the medians as "name M f32_ms bf16_ms" lines (f32: linear_forward as it runs) for the PyTorch peer
// (peers/decode_linear_torch.py, run by run_decode_bandwidth.sh) to print ours/torch.
//
// Usage: decode_bandwidth [--quick] [--reps N] [--threads N] [--pool-mib N] [--tries N]
//                         [--kernel auto|avx512|avx2] [--results FILE]
//   --quick     5 timed calls per case (default 21), 3 bandwidth repeats (default 7)
//   --tries     a case during which other processes took more than 0.1 core is timed again, 2 s later, up
//               to N times in all (default 5); the cores they took are printed beside each figure
//   --kernel    the streaming kernel, f32 and bf16 (default: the widest this CPU has); with AVX-512, a bf16
//               avx2 column is added
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "blip2/backend/onednn/linear_bf16.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/linear_bf16.hpp"

using namespace blip2;
using namespace blip2::bench;
using bf16_kernels = onednn_backend::bf16_kernels;

namespace {

struct settings {
  bool quick = false;
  int reps = 21, bw_reps = 7, threads = 0, tries = 5;
  std::size_t pool_mib = 2048;
  bf16_kernels kernel = bf16_kernels::automatic;
  std::string results;
};

// measure(fn, reps), again (at most `tries` times in all, 2 s apart) while other processes took more than
// 0.1 core meanwhile: on a shared 2-core machine one busy core stalls every OpenMP barrier (calls then
// take multiples of the scheduler's time slice). others: what they took during the attempt kept.
struct quiet_timing {
  timing t;
  double others = 0;
};
template <class Fn>
quiet_timing measure_quiet(Fn&& fn, int reps, int tries) {
  quiet_timing q;
  for (int i = 0; i < tries; ++i) {
    if (i > 0) sleep(2);
    const auto c0 = cpu_now();
    q.t = measure(fn, reps);
    q.others = others_cores(c0, cpu_now());
    if (q.others <= 0.1) break;
  }
  return q;
}

const char* kernel_name(bf16_kernels k) {
  switch (k) {
    case bf16_kernels::automatic: return "auto";
    case bf16_kernels::avx512: return "avx512";
    case bf16_kernels::avx2: return "avx2";
    case bf16_kernels::reference: return "reference";
  }
  return "?";
}

// The pool: bytes / 2 bfloat16 values of magnitude < 0.05. Read as float32 (two bfloat16 per float: the
// upper one gives sign, exponent and top bits) they are floats of the same size: both kinds of weights
// come from the same bytes.
struct pool {
  std::size_t bytes;
  bfloat16* data;
  explicit pool(std::size_t b)
      : bytes(b / 4096 * 4096), data(static_cast<bfloat16*>(std::aligned_alloc(4096, bytes))) {
    if (!data) std::fprintf(stderr, "cannot allocate %zu bytes\n", bytes), std::exit(1);
    fill();
  }
  ~pool() { std::free(data); }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  void fill() {
    const auto n = static_cast<std::int64_t>(bytes / 2);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) data[i] = to_bfloat16(0.05f * unit(3, static_cast<std::uint64_t>(i)));
  }
  const float* floats() const { return reinterpret_cast<const float*>(data); }
};

// ---- STREAM-like bandwidth (GB/s = 1e9 bytes/s) ----
struct bandwidth {
  quiet_timing read, copy, triad;
  double read_gbs = 0, copy_gbs = 0, triad_gbs = 0;
};

// Reads `bytes` bytes from p (a multiple of 128) on all threads, each a contiguous part, with
// bench_common's sum_words (four independent vector sums): the read rate.
volatile std::uint64_t read_sink = 0;
void read_all(const void* p, std::int64_t bytes) {
  const auto* w = static_cast<const std::uint64_t*>(p);
  const std::int64_t words = bytes / 8, chunk = 1 << 16;  // 512 KiB
  std::uint64_t s = 0;
#pragma omp parallel for schedule(static) reduction(+ : s)
  for (std::int64_t c = 0; c < words; c += chunk) s += sum_words(w + c, std::min(chunk, words - c));
  read_sink = read_sink + s;
}

bandwidth measure_bandwidth(pool& p, int reps, int tries) {
  bandwidth b;
  b.read = measure_quiet([&] { read_all(p.data, static_cast<std::int64_t>(p.bytes)); }, reps, tries);
  b.read_gbs = static_cast<double>(p.bytes) / b.read.t.median_s * 1e-9;
  // copy: the first half into the second (bytes read + bytes written, STREAM's count)
  auto* bytes = reinterpret_cast<unsigned char*>(p.data);
  const std::int64_t half = static_cast<std::int64_t>(p.bytes / 2), chunk = 1 << 20;
  b.copy = measure_quiet(
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t c = 0; c < half; c += chunk) std::memcpy(bytes + half + c, bytes + c, std::min(chunk, half - c));
      },
      reps, tries);
  b.copy_gbs = 2.0 * static_cast<double>(half) / b.copy.t.median_s * 1e-9;
  // triad: a = b + 3 c over thirds of the pool, as floats
  auto* f = reinterpret_cast<float*>(p.data);
  const auto n = static_cast<std::int64_t>(p.bytes / 12);
  float *a = f, *x = f + n, *y = f + 2 * n;
  b.triad = measure_quiet(
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t i = 0; i < n; ++i) a[i] = x[i] + 3.0f * y[i];
      },
      reps, tries);
  b.triad_gbs = 3.0 * static_cast<double>(n) * 4 / b.triad.t.median_s * 1e-9;
  p.fill();  // copy and triad wrote over the weights
  return b;
}

// ---- the decode shapes ----
struct shape {
  const char* name;
  index_t N, K;
  int per_layer;  // how many of it one decoder layer has (lm_head: 0, once per step)
};
constexpr shape shapes[] = {{"q/k/v/out", 2560, 2560, 4}, {"fc1", 10240, 2560, 1}, {"fc2", 2560, 10240, 1},
                            {"lm_head", 50272, 2560, 0}};
constexpr int layers = 32;

struct row {
  timing read, f32, f32_onednn, bf16, bf16_alt;  // read: the bf16 weights' bytes summed; bf16_alt: the AVX2 kernel
  double others = 0;
};

// The weights of the next call: the pool's next N x K x elem bytes after the last call's (from the start
// when they would pass the end), so a call never reads what the last 2 GiB of reads left in a cache.
struct rotation {
  const pool& p;
  std::size_t at = 0;
  const unsigned char* next(std::size_t bytes) {
    if (at + bytes > p.bytes) at = 0;
    const auto* w = reinterpret_cast<const unsigned char*>(p.data) + at;
    at += (bytes + 4095) / 4096 * 4096;
    return w;
  }
};

// Medians of out = inp W^T + bias by each of `calls` (f32, bf16, ...): one untimed round, then `reps`
// rounds that time each call once, in turn, so that all see the same memory system (this VM's bandwidth
// moves from second to second). Again, 2 s later, while other processes took more than 0.1 core, at most
// `tries` times in all.
template <class... Calls>
std::vector<timing> time_in_turn(rotation& rot, index_t N, index_t K, int reps, int tries, double& others,
                                 Calls&&... calls) {
  std::vector<std::vector<double>> t(sizeof...(Calls));
  auto round = [&](bool timed) {
    std::size_t i = 0;
    auto one = [&](auto& call) {
      const double t0 = now_s();
      call(N, K, rot);
      if (timed) t[i].push_back(now_s() - t0);
      ++i;
    };
    (one(calls), ...);
  };
  for (int attempt = 0; attempt < tries; ++attempt) {
    if (attempt > 0) sleep(2);
    for (auto& v : t) v.clear();
    const auto c0 = cpu_now();
    round(false);
    for (int r = 0; r < reps; ++r) round(true);
    others = others_cores(c0, cpu_now());
    if (others <= 0.1) break;
  }
  std::vector<timing> out;
  for (const auto& v : t) out.push_back(summarize(v));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  settings cfg;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return flag_value(argc, argv, i); };
    if (a == "--quick") cfg.quick = true, cfg.reps = 5, cfg.bw_reps = 3;
    else if (a == "--reps") cfg.reps = std::max(1, std::stoi(next()));
    else if (a == "--threads") cfg.threads = std::stoi(next());
    else if (a == "--pool-mib") cfg.pool_mib = std::stoul(next());
    else if (a == "--tries") cfg.tries = std::max(1, std::stoi(next()));
    else if (a == "--results") cfg.results = next();
    else if (a == "--kernel") {
      const std::string k = next();
      cfg.kernel = k == "avx512" ? bf16_kernels::avx512 : k == "avx2" ? bf16_kernels::avx2 : bf16_kernels::automatic;
    } else {
      std::fprintf(stderr, "usage: decode_bandwidth [--quick] [--reps N] [--threads N] [--pool-mib N] [--tries N] "
                           "[--kernel auto|avx512|avx2] [--results FILE]\n");
      return 2;
    }
  }
  const int threads = set_threads(cfg.threads);
  print_banner("decode_bandwidth", cfg.quick, threads);
  onednn_backend be, be_alt, be_onednn;
  be.set_bf16_kernel(cfg.kernel);
  be.set_f32_kernel(cfg.kernel);
  be_onednn.set_f32_kernel(bf16_kernels::reference);  // linear_forward on oneDNN's matmul at every shape
  const bf16_kernels used = onednn_detail::bf16_kernel_for(cfg.kernel);
  const bool alt = used == bf16_kernels::avx512 && onednn_detail::bf16_kernel_available(bf16_kernels::avx2);
  be_alt.set_bf16_kernel(bf16_kernels::avx2);
  std::printf("streaming kernel (f32 and bf16): %s%s; oneDNN bf16 matmul on this CPU: %s\n", kernel_name(used),
              alt ? " (and avx2 beside it)" : "", onednn_bf16_matmul_available(be) ? "yes" : "no");
  std::printf("each case: 1 untimed call, then %d timed; medians. Weights rotate over a %zu MiB pool.\n\n", cfg.reps,
              cfg.pool_mib);

  pool p(cfg.pool_mib << 20);
  const bandwidth bw = measure_bandwidth(p, cfg.bw_reps, cfg.tries);
  std::printf("memory bandwidth (%zu MiB, %d repeats, median [min, max] GB/s; the cores other processes took):\n",
              p.bytes >> 20, cfg.bw_reps);
  auto gbs = [](double bytes, const quiet_timing& q) {
    char b[96];
    const timing& t = q.t;
    std::snprintf(b, sizeof b, "%5.1f [%5.1f, %5.1f]   others %.2f", bytes / t.median_s * 1e-9, bytes / t.max_s * 1e-9,
                  bytes / t.min_s * 1e-9, q.others);
    return std::string(b);
  };
  std::printf("  read  (sum)           %s\n", gbs(static_cast<double>(p.bytes), bw.read).c_str());
  std::printf("  copy  (a = b)         %s\n", gbs(static_cast<double>(p.bytes), bw.copy).c_str());
  std::printf("  triad (a = b + 3 c)   %s\n", gbs(static_cast<double>(p.bytes / 12 * 12), bw.triad).c_str());
  {  // the conversion that loading float32 weights into bfloat16 storage pays: a quarter of the pool in
    const std::size_t n = p.bytes / 4 / 4;
    const float* src = p.floats();
    bfloat16* dst = p.data + p.bytes / 4;  // after the floats read
    const quiet_timing q = measure_quiet([&] { to_bfloat16(src, dst, n); }, cfg.bw_reps, cfg.tries);
    const double g = static_cast<double>(n) * 4 / q.t.median_s * 1e-9;
    std::printf("  to_bfloat16 (f32 -> bf16, %zu MiB in): %.1f GB/s of float32 (OPT-2.7B's 10.6 GB: %.1f s)   others %.2f\n\n",
                n * 4 >> 20, g, 10.6 / g, q.others);
    p.fill();
  }

  std::printf("%-10s %2s | %6s | %-24s | %-24s | %-24s | %7s | %-24s | %s\n", "linear", "M", "read",
              "f32 ours: ms GB/s %rd", "f32 oneDNN: ms GB/s %rd", "bf16 ours: ms GB/s %rd", "bf16/f32",
              alt ? "bf16 avx2: ms GB/s %rd" : "", "others");
  std::vector<std::vector<row>> rows(std::size(shapes));
  rotation rot{p};
  const index_t Ms[] = {1, 5};
  for (std::size_t s = 0; s < std::size(shapes); ++s) {
    const auto [name, N, K, per_layer] = shapes[s];
    for (index_t M : Ms) {
      host_tensor<float, 2> inp({M, K}), out({M, N});
      host_tensor<float, 1> bias({N});
      for (index_t i = 0; i < inp.size(); ++i) inp[i] = unit(1, static_cast<std::uint64_t>(i));
      for (index_t i = 0; i < N; ++i) bias[i] = 0.02f * unit(2, static_cast<std::uint64_t>(i));
      // the calls, each on the rotation's next bytes: a plain read of as many bytes as the bf16 weights
      // (the bandwidth at that moment: the VM's moves from minute to minute), then the linears
      auto read = [&](index_t n, index_t k, rotation& rt) {
        read_all(rt.next(static_cast<std::size_t>(n * k) * 2), n * k * 2);
      };
      auto f32_with = [&](onednn_backend& b) {
        return [&](index_t n, index_t k, rotation& rt) {
          const auto* w = reinterpret_cast<const float*>(rt.next(static_cast<std::size_t>(n * k) * 4));
          linear_forward(b, out, inp, tensor_view<const float, 2>(w, {n, k}), bias);
        };
      };
      auto f32 = f32_with(be), f32_onednn = f32_with(be_onednn);
      auto bf16_with = [&](onednn_backend& b) {
        return [&](index_t n, index_t k, rotation& rt) {
          const auto* w = reinterpret_cast<const bfloat16*>(rt.next(static_cast<std::size_t>(n * k) * 2));
          linear_bf16_forward(b, out, inp, tensor_view<const bfloat16, 2>(w, {n, k}), bias);
        };
      };
      auto bf16 = bf16_with(be), bf16_alt = bf16_with(be_alt);
      row r;
      if (alt) {
        const auto t = time_in_turn(rot, N, K, cfg.reps, cfg.tries, r.others, read, f32, f32_onednn, bf16, bf16_alt);
        r.read = t[0], r.f32 = t[1], r.f32_onednn = t[2], r.bf16 = t[3], r.bf16_alt = t[4];
      } else {
        const auto t = time_in_turn(rot, N, K, cfg.reps, cfg.tries, r.others, read, f32, f32_onednn, bf16);
        r.read = t[0], r.f32 = t[1], r.f32_onednn = t[2], r.bf16 = t[3];
      }
      const double wb = static_cast<double>(N * K), read_gbs = 2 * wb / r.read.median_s * 1e-9;
      auto cell = [&](const timing& t, double bytes) {
        char b[64];
        const double g = bytes / t.median_s * 1e-9;
        std::snprintf(b, sizeof b, "%7.3f %6.1f %4.0f%%", t.median_s * 1e3, g, 100 * g / read_gbs);
        return std::string(b);
      };
      std::printf("%-10s %2ld | %6.1f | %-24s | %-24s | %-24s | %7.2fx | %-24s | %.2f\n", name, static_cast<long>(M),
                  read_gbs, cell(r.f32, 4 * wb).c_str(), cell(r.f32_onednn, 4 * wb).c_str(), cell(r.bf16, 2 * wb).c_str(),
                  r.f32.median_s / r.bf16.median_s,
                  alt ? cell(r.bf16_alt, 2 * wb).c_str() : "", r.others);
      std::fflush(stdout);
      rows[s].push_back(r);
    }
  }
  std::printf("(read: GB/s of a plain sum over as many bytes as the bf16 weights; %%rd: a kernel's GB/s over it; read, "
              "f32 ours, f32 oneDNN, bf16%s timed in turn, call by call; others: the cores other processes took meanwhile, after up "
              "to %d tries; load average %s)\n\n", alt ? " and bf16 avx2" : "", cfg.tries, loadavg().c_str());

  // ---- whole model: 32 layers of six linears + lm_head per step ----
  double params = 0;
  for (const auto& sh : shapes) params += static_cast<double>(sh.N * sh.K) * (sh.per_layer ? sh.per_layer * layers : 1);
  std::printf("whole model (OPT-2.7B linears: %.2f G weights, %.1f GB f32 / %.1f GB bf16 per step; attention, "
              "LayerNorm, KV cache left out; the read limit: the same bytes at each row's read rate; at the 2 GiB "
              "read rate above: %.2f steps/s f32, %.2f bf16):\n",
              params * 1e-9, params * 4e-9, params * 2e-9, bw.read_gbs * 1e9 / (params * 4), bw.read_gbs * 1e9 / (params * 2));
  std::ofstream results;
  if (!cfg.results.empty()) results.open(cfg.results);
  for (std::size_t mi = 0; mi < std::size(Ms); ++mi) {
    double f32 = 0, f32_onednn = 0, bf16 = 0, bf16_alt = 0, limit_bf16 = 0;
    for (std::size_t s = 0; s < std::size(shapes); ++s) {
      const double times = shapes[s].per_layer ? shapes[s].per_layer * layers : 1;
      limit_bf16 += times * rows[s][mi].read.median_s;
      f32 += times * rows[s][mi].f32.median_s;
      f32_onednn += times * rows[s][mi].f32_onednn.median_s;
      bf16 += times * rows[s][mi].bf16.median_s;
      bf16_alt += times * rows[s][mi].bf16_alt.median_s;
      if (results)
        results << shapes[s].name << ' ' << Ms[mi] << ' ' << rows[s][mi].f32.median_s * 1e3 << ' '
                << rows[s][mi].bf16.median_s * 1e3 << '\n';
    }
    if (results) results << "model " << Ms[mi] << ' ' << f32 * 1e3 << ' ' << bf16 * 1e3 << '\n';
    const double limit_f32 = 2 * limit_bf16;  // the same bandwidth, twice the bytes
    std::printf("  M = %ld: f32 ours %.1f ms/step = %.2f steps/s (%.0f%% of the read limit %.2f); f32 oneDNN %.2f "
                "steps/s (%.0f%%); bf16 %.1f ms/step = %.2f steps/s (%.0f%% of %.2f); bf16/f32 ours %.2fx",
                static_cast<long>(Ms[mi]), f32 * 1e3, 1 / f32, 100 * limit_f32 / f32, 1 / limit_f32, 1 / f32_onednn,
                100 * limit_f32 / f32_onednn, bf16 * 1e3, 1 / bf16, 100 * limit_bf16 / bf16, 1 / limit_bf16, f32 / bf16);
    if (alt) std::printf("; bf16 avx2 %.2f steps/s", 1 / bf16_alt);
    std::printf("\n");
  }
  if (results) std::printf("medians written to %s\n", cfg.results.c_str());
  std::printf("load average at the end: %s\n", loadavg().c_str());
  return 0;
}
