// decode_bandwidth: the linear layers of one decode step of a frozen OPT-2.7B, float32 weights (oneDNN's
// matmul through linear_forward) against bfloat16 weights (our linear_bf16_forward), against the
// machine's memory bandwidth.
//
// A decode step multiplies M = 1 row per sequence (greedy) or M = 5 (5 beams) by every weight matrix: 2 M
// flops per weight read, so its time is the weights' bytes over the bandwidth. Printed:
//   - the CPU, oneDNN's ISA, the threads, which bf16 kernel runs;
//   - STREAM-like bandwidth over a pool far larger than the caches (default 2 GiB: this machine's VM
//     reports a 508 MiB L3, and reads of 256 MiB ran at 3-4x the DRAM rate): read (a sum of 64-bit words
//     in four independent AVX2 sums), copy (half to half) and triad (a = b + 3 c over thirds); medians;
//   - the f32 -> bf16 conversion of weights (to_bfloat16), GB/s of float32 read;
//   - for OPT-2.7B's decode shapes (q/k/v/out 2560x2560, fc1 10240x2560, fc2 2560x10240, lm_head
//     50272x2560) at M = 1 and 5: the median time of linear_forward (f32) and linear_bf16_forward, the
//     effective GB/s (weight bytes / time) and its fraction of the measured read bandwidth. Each call reads
//     its weights from another slot of the same pool (slots in turn), so weights come from memory, as in a
//     real decode whose 5.3-10.6 GB of weights no cache holds (a warm 26 MB matrix would run from cache);
//   - a whole-model estimate: one layer's six linears x 32 + lm_head per step, as steps/s for f32 and bf16
//     (at M = 5 a step makes one token for each of the 5 beams), the bf16/f32 ratio, and the limit
//     (weight bytes per step over the read bandwidth). Attention, LayerNorm and the KV cache are left out.
// --results FILE writes the medians as "name M f32_ms bf16_ms" lines for the PyTorch peer
// (peers/decode_linear_torch.py, run by run_decode_bandwidth.sh) to print ours/torch.
//
// Usage: decode_bandwidth [--quick] [--reps N] [--threads N] [--pool-mib N] [--kernel auto|avx512|avx2]
//                         [--results FILE]
//   --quick     5 timed calls per case (default 21), 3 bandwidth repeats (default 7)
//   --kernel    the bf16 kernel (default: the widest this CPU has); with AVX-512, an avx2 column is added
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <immintrin.h>

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
  int reps = 21, bw_reps = 7, threads = 0;
  std::size_t pool_mib = 2048;
  bf16_kernels kernel = bf16_kernels::automatic;
  std::string results;
};

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
  timing read, copy, triad;
  double read_gbs = 0, copy_gbs = 0, triad_gbs = 0;
};

// The sum of n 64-bit words (n a multiple of 16), four independent vector sums: a read at full speed.
__attribute__((target("avx2"))) std::uint64_t sum_words_avx2(const std::uint64_t* w, std::int64_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (std::int64_t i = 0; i < n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 12)));
  }
  std::uint64_t lane[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lane), _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return lane[0] + lane[1] + lane[2] + lane[3];
}
std::uint64_t sum_words(const std::uint64_t* w, std::int64_t n) {
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(w, n);
  std::uint64_t s[4] = {};
  for (std::int64_t i = 0; i < n; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += w[i + j];
  return s[0] + s[1] + s[2] + s[3];
}

bandwidth measure_bandwidth(pool& p, int reps) {
  bandwidth b;
  const auto words = static_cast<std::int64_t>(p.bytes / 8);  // a multiple of 512 (whole pages)
  const auto* w = reinterpret_cast<const std::uint64_t*>(p.data);
  volatile std::uint64_t sink = 0;
  b.read = measure(
      [&] {
        std::uint64_t s = 0;
        const std::int64_t chunk = 1 << 16;  // words: 512 KiB
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (std::int64_t c = 0; c < words; c += chunk) s += sum_words(w + c, std::min(chunk, words - c));
        sink = sink + s;
      },
      reps);
  b.read_gbs = static_cast<double>(p.bytes) / b.read.median_s * 1e-9;
  // copy: the first half into the second (bytes read + bytes written, STREAM's count)
  auto* bytes = reinterpret_cast<unsigned char*>(p.data);
  const std::int64_t half = static_cast<std::int64_t>(p.bytes / 2), chunk = 1 << 20;
  b.copy = measure(
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t c = 0; c < half; c += chunk) std::memcpy(bytes + half + c, bytes + c, std::min(chunk, half - c));
      },
      reps);
  b.copy_gbs = 2.0 * static_cast<double>(half) / b.copy.median_s * 1e-9;
  // triad: a = b + 3 c over thirds of the pool, as floats
  auto* f = reinterpret_cast<float*>(p.data);
  const auto n = static_cast<std::int64_t>(p.bytes / 12);
  float *a = f, *x = f + n, *y = f + 2 * n;
  b.triad = measure(
      [&] {
#pragma omp parallel for schedule(static)
        for (std::int64_t i = 0; i < n; ++i) a[i] = x[i] + 3.0f * y[i];
      },
      reps);
  b.triad_gbs = 3.0 * static_cast<double>(n) * 4 / b.triad.median_s * 1e-9;
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
  timing f32, bf16, bf16_alt;  // bf16_alt: the AVX2 kernel on an AVX-512 CPU
};

// Median time of out = inp W^T + bias, W taken in turn from the pool's slots of N x K elements of Elem.
template <class Elem, class Call>
timing time_rotating(const pool& p, index_t N, index_t K, int reps, Call&& call) {
  const std::size_t slot = static_cast<std::size_t>(N * K) * sizeof(Elem);
  const std::size_t slots = std::max<std::size_t>(1, p.bytes / slot);
  std::size_t next = 0;
  auto* base = reinterpret_cast<const unsigned char*>(p.data);
  return measure(
      [&] {
        call(tensor_view<const Elem, 2>(reinterpret_cast<const Elem*>(base + next * slot), {N, K}));
        next = (next + 1) % slots;
      },
      reps);
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
    else if (a == "--results") cfg.results = next();
    else if (a == "--kernel") {
      const std::string k = next();
      cfg.kernel = k == "avx512" ? bf16_kernels::avx512 : k == "avx2" ? bf16_kernels::avx2 : bf16_kernels::automatic;
    } else {
      std::fprintf(stderr, "usage: decode_bandwidth [--quick] [--reps N] [--threads N] [--pool-mib N] "
                           "[--kernel auto|avx512|avx2] [--results FILE]\n");
      return 2;
    }
  }
  const int threads = set_threads(cfg.threads);
  print_banner("decode_bandwidth", cfg.quick, threads);
  onednn_backend be, be_alt;
  be.set_bf16_kernel(cfg.kernel);
  const bf16_kernels used = onednn_detail::bf16_kernel_for(cfg.kernel);
  const bool alt = used == bf16_kernels::avx512 && onednn_detail::bf16_kernel_available(bf16_kernels::avx2);
  be_alt.set_bf16_kernel(bf16_kernels::avx2);
  std::printf("bf16 kernel: %s%s; oneDNN bf16 matmul on this CPU: %s\n", kernel_name(used),
              alt ? " (and avx2 beside it)" : "", onednn_bf16_matmul_available(be) ? "yes" : "no");
  std::printf("each case: 1 untimed call, then %d timed; medians. Weights rotate over a %zu MiB pool.\n\n", cfg.reps,
              cfg.pool_mib);

  pool p(cfg.pool_mib << 20);
  const auto c0 = cpu_now();
  const bandwidth bw = measure_bandwidth(p, cfg.bw_reps);
  std::printf("memory bandwidth (%zu MiB, %d repeats, median [min, max] GB/s; other processes %.2f cores):\n",
              p.bytes >> 20, cfg.bw_reps, others_cores(c0, cpu_now()));
  auto gbs = [](double bytes, const timing& t) {
    char b[64];
    std::snprintf(b, sizeof b, "%5.1f [%5.1f, %5.1f]", bytes / t.median_s * 1e-9, bytes / t.max_s * 1e-9,
                  bytes / t.min_s * 1e-9);
    return std::string(b);
  };
  std::printf("  read  (sum)           %s\n", gbs(static_cast<double>(p.bytes), bw.read).c_str());
  std::printf("  copy  (a = b)         %s\n", gbs(static_cast<double>(p.bytes), bw.copy).c_str());
  std::printf("  triad (a = b + 3 c)   %s\n", gbs(static_cast<double>(p.bytes / 12 * 12), bw.triad).c_str());
  {  // the conversion that loading float32 weights into bfloat16 storage pays: a quarter of the pool in
    const std::size_t n = p.bytes / 4 / 4;
    const float* src = p.floats();
    bfloat16* dst = p.data + p.bytes / 4;  // after the floats read
    const timing t = measure([&] { to_bfloat16(src, dst, n); }, cfg.bw_reps);
    std::printf("  to_bfloat16 (f32 -> bf16, %zu MiB in): %.1f GB/s of float32 (OPT-2.7B's 10.6 GB: %.1f s)\n\n",
                n * 4 >> 20, static_cast<double>(n) * 4 / t.median_s * 1e-9,
                10.6 / (static_cast<double>(n) * 4 / t.median_s * 1e-9));
    p.fill();
  }

  std::printf("%-10s %2s | %-24s | %-24s | %7s%s\n", "linear", "M", "f32 oneDNN: ms GB/s %bw", "bf16 ours: ms GB/s %bw",
              "bf16/f32", alt ? " | bf16 avx2: ms GB/s %bw" : "");
  std::vector<std::vector<row>> rows(std::size(shapes));
  const index_t Ms[] = {1, 5};
  const auto c1 = cpu_now();
  for (std::size_t s = 0; s < std::size(shapes); ++s) {
    const auto [name, N, K, per_layer] = shapes[s];
    for (index_t M : Ms) {
      host_tensor<float, 2> inp({M, K}), out({M, N});
      host_tensor<float, 1> bias({N});
      for (index_t i = 0; i < inp.size(); ++i) inp[i] = unit(1, static_cast<std::uint64_t>(i));
      for (index_t i = 0; i < N; ++i) bias[i] = 0.02f * unit(2, static_cast<std::uint64_t>(i));
      row r;
      r.f32 = time_rotating<float>(p, N, K, cfg.reps, [&](auto w) { linear_forward(be, out, inp, w, bias); });
      r.bf16 = time_rotating<bfloat16>(p, N, K, cfg.reps, [&](auto w) { linear_bf16_forward(be, out, inp, w, bias); });
      if (alt)
        r.bf16_alt = time_rotating<bfloat16>(p, N, K, cfg.reps,
                                             [&](auto w) { linear_bf16_forward(be_alt, out, inp, w, bias); });
      auto cell = [&](const timing& t, double bytes) {
        char b[64];
        const double g = bytes / t.median_s * 1e-9;
        std::snprintf(b, sizeof b, "%7.3f %6.1f %4.0f%%", t.median_s * 1e3, g, 100 * g / bw.read_gbs);
        return std::string(b);
      };
      const double wb = static_cast<double>(N * K);
      std::printf("%-10s %2ld | %-24s | %-24s | %7.2fx%s\n", name, static_cast<long>(M), cell(r.f32, 4 * wb).c_str(),
                  cell(r.bf16, 2 * wb).c_str(), r.f32.median_s / r.bf16.median_s,
                  alt ? (" | " + cell(r.bf16_alt, 2 * wb)).c_str() : "");
      std::fflush(stdout);
      rows[s].push_back(r);
    }
  }
  std::printf("(other processes %.2f cores during the table; load average %s)\n\n", others_cores(c1, cpu_now()),
              loadavg().c_str());

  // ---- whole model: 32 layers of six linears + lm_head per step ----
  double params = 0;
  for (const auto& sh : shapes) params += static_cast<double>(sh.N * sh.K) * (sh.per_layer ? sh.per_layer * layers : 1);
  std::printf("whole model (OPT-2.7B linears: %.2f G weights, %.1f GB f32 / %.1f GB bf16 per step; attention, "
              "LayerNorm, KV cache left out):\n",
              params * 1e-9, params * 4e-9, params * 2e-9);
  std::ofstream results;
  if (!cfg.results.empty()) results.open(cfg.results);
  for (std::size_t mi = 0; mi < std::size(Ms); ++mi) {
    double f32 = 0, bf16 = 0, bf16_alt = 0;
    for (std::size_t s = 0; s < std::size(shapes); ++s) {
      const double times = shapes[s].per_layer ? shapes[s].per_layer * layers : 1;
      f32 += times * rows[s][mi].f32.median_s;
      bf16 += times * rows[s][mi].bf16.median_s;
      bf16_alt += times * rows[s][mi].bf16_alt.median_s;
      if (results)
        results << shapes[s].name << ' ' << Ms[mi] << ' ' << rows[s][mi].f32.median_s * 1e3 << ' '
                << rows[s][mi].bf16.median_s * 1e3 << '\n';
    }
    if (results) results << "model " << Ms[mi] << ' ' << f32 * 1e3 << ' ' << bf16 * 1e3 << '\n';
    const double limit_f32 = params * 4 / (bw.read_gbs * 1e9), limit_bf16 = params * 2 / (bw.read_gbs * 1e9);
    std::printf("  M = %ld: f32 %.1f ms/step = %.2f steps/s (%.0f%% of the bandwidth limit %.2f); bf16 %.1f ms/step = "
                "%.2f steps/s (%.0f%% of %.2f); bf16/f32 %.2fx",
                static_cast<long>(Ms[mi]), f32 * 1e3, 1 / f32, 100 * limit_f32 / f32, 1 / limit_f32, bf16 * 1e3,
                1 / bf16, 100 * limit_bf16 / bf16, 1 / limit_bf16, f32 / bf16);
    if (alt) std::printf("; bf16 avx2 %.2f steps/s", 1 / bf16_alt);
    std::printf("\n");
  }
  if (results) std::printf("medians written to %s\n", cfg.results.c_str());
  std::printf("load average at the end: %s\n", loadavg().c_str());
  return 0;
}
