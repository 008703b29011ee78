// bench_common.hpp: what the benchmark programs share (bench_ops, bench_vision, bench_image_pass,
// bench_stage1_step). Not part of the library: plain helpers for programs run by hand.
//   (bench_basics.hpp: the clock, medians, hashed weights, the PyTorch peers, flags)
//   machine               loadavg, cpu_model, set_threads, print_banner
//   other processes       cpu_times / cpu_now / others_cores: the CPU that other processes took meanwhile
//   the practical peak    peak_operands, print_peak: a large oneDNN f32 matmul, one printed line
//   per-op profiles       profiled_onednn (the oneDNN kernels, each call timed under the key that the
//                         program's profile_key gives it), by_time
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "bench_basics.hpp"
#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/matmul.hpp"
#include "blip2/models/vit/bf16.hpp"

namespace blip2::bench {

// ---- machine ----

// The 1, 5 and 15 minute load averages, as /proc/loadavg writes them.
inline std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// The CPU's "model name" from /proc/cpuinfo, or `fallback` where it has none.
inline std::string cpu_model(const char* fallback = "unknown") {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return fallback;
}

// OpenMP threads: `requested` when > 0 (else OMP_NUM_THREADS or all cores); returns the count in use.
inline int set_threads([[maybe_unused]] int requested) {
#if defined(_OPENMP)
  if (requested > 0) omp_set_num_threads(requested);
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// "NAME[ --quick]: CPU ..., oneDNN x.y.z (ISA ...), N threads, load average ... (1, 5, 15 min)"
inline void print_banner(const char* name, bool quick, int threads) {
  const auto* ver = dnnl_version();
  std::printf("%s%s: CPU %s, oneDNN %d.%d.%d (ISA %s), %d threads, load average %s (1, 5, 15 min)\n", name,
              quick ? " --quick" : "", cpu_model().c_str(), ver->major, ver->minor, ver->patch,
              onednn_cpu_isa_name().c_str(), threads, loadavg().c_str());
}

// ---- other processes: how much CPU they took while a section ran ----
// CPU seconds since boot: all cores busy (/proc/stat: user nice system irq softirq; steal apart), and this
// process's own and its waited-for children's (getrusage). On a shared machine every OpenMP barrier waits
// while another process holds a core, so > 0.1 core of others taints a timing.
struct cpu_times {
  double wall = 0, busy = 0, steal = 0, self = 0, children = 0;
};
inline cpu_times cpu_now() {
  cpu_times t;
  std::ifstream f("/proc/stat");
  std::string cpu;
  long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  f >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq >> steal;
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  t.busy = static_cast<double>(user + nice + sys + irq + softirq) * tick;
  t.steal = static_cast<double>(steal) * tick;
  auto cpu_s = [](int who) {
    rusage u{};
    getrusage(who, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  t.self = cpu_s(RUSAGE_SELF);
  t.children = cpu_s(RUSAGE_CHILDREN);
  t.wall = now_s();
  return t;
}
// Cores' worth of CPU that other processes used between a and b (1.0 = one core kept busy all along).
// count_steal: whether time the hypervisor gave to other guests counts as others' (bench_vision: no).
inline double others_cores(const cpu_times& a, const cpu_times& b, bool count_steal = true) {
  const double busy = (b.busy - a.busy) + (count_steal ? b.steal - a.steal : 0.0);
  const double own = (b.self - a.self) + (b.children - a.children);
  return std::max(0.0, busy - own) / std::max(b.wall - a.wall, 1e-9);
}

// ---- the practical peak: one large f32 matmul through oneDNN ----
// Its operands (P, P) from the hash (ordinals 7 and 8); c takes the product.
struct peak_operands {
  index_t P;
  host_tensor<float, 2> a, b, c;
  explicit peak_operands(index_t n) : P(n), a({n, n}), b({n, n}), c({n, n}) {
    for (index_t i = 0; i < a.size(); ++i)
      a[i] = unit(7, static_cast<std::uint64_t>(i)), b[i] = unit(8, static_cast<std::uint64_t>(i));
  }
};
// Times c = a b (1 untimed, reps timed; the median), prints one line and returns its GFLOP/s.
template <class Be>
double print_peak(Be& be, peak_operands& op, const char* when, int reps) {
  const auto c0 = cpu_now();
  const timing t = measure([&] { matmul(be, op.c, op.a, op.b); }, reps);
  const double P = static_cast<double>(op.P), g = 2.0 * P * P * P / t.median_s * 1e-9;
  std::printf("practical peak (%s): oneDNN f32 matmul %ld^3: %.1f ms, %.1f GFLOP/s (load average %s; other "
              "processes %.2f cores)\n",
              when, static_cast<long>(op.P), t.median_s * 1e3, g, loadavg().c_str(), others_cores(c0, cpu_now()));
  std::fflush(stdout);
  return g;
}

// ---- memory read bandwidth ----
// The sum of n 64-bit words (n a multiple of 16) in four independent vector sums, so that the loop waits
// on memory, not on the adds (a float sum in strict order would be compute-bound).
__attribute__((target("avx2"))) inline std::uint64_t sum_words_avx2(const std::uint64_t* w, std::int64_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (std::int64_t i = 0; i < n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 12)));
  }
  std::uint64_t lane[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lane),
                      _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
  return lane[0] + lane[1] + lane[2] + lane[3];
}
inline std::uint64_t sum_words(const std::uint64_t* w, std::int64_t n) {
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(w, n);
  std::uint64_t s[4] = {};
  for (std::int64_t i = 0; i < n; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += w[i + j];
  return s[0] + s[1] + s[2] + s[3];
}
// Read bandwidth over `bytes` (a multiple of 128) at p, all threads: the median of reps sums (1e9 bytes/s).
inline timing read_bandwidth(const void* p, std::size_t bytes, int reps) {
  const auto words = static_cast<std::int64_t>(bytes / 8);
  const auto* w = static_cast<const std::uint64_t*>(p);
  volatile std::uint64_t sink = 0;
  return measure(
      [&] {
        std::uint64_t s = 0;
        const std::int64_t chunk = 1 << 16;  // words: 512 KiB per task
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (std::int64_t c = 0; c < words; c += chunk) s += sum_words(w + c, std::min(chunk, words - c));
        sink = sink + s;
      },
      reps);
}

// ---- per-op profiles: a backend that runs the oneDNN kernels and times each call (profiled_onednn) ----
struct op_stats {
  int calls = 0;
  double seconds = 0, flops = 0;
};
// The row a kernel call of Op on these arguments is added to (the op's name, and what the program adds:
// shapes): declared here, defined by each program that runs profiled_onednn.
template <class Op, class... A>
std::string profile_key(const A&... a);

// FLOP of a kernel call, 2 per multiply-add of its matmuls: linear forward 2 R K N, linear backward the same
// for d weight and again for d input when asked, attention forward 4 B T S C (q k^T and p v); 0 for the rest.
template <class Op, class... A>
double profile_flops(const A&... a) {
  const auto args = std::forward_as_tuple(a...);
  if constexpr (std::is_same_v<Op, op::linear_forward>) {
    const auto& inp = std::get<1>(args);  // (R, K)
    const auto& w = std::get<2>(args);    // (N, K)
    return 2.0 * inp.extent(0) * inp.extent(1) * w.extent(0);
  } else if constexpr (std::is_same_v<Op, op::linear_backward>) {
    const auto& dinp = std::get<0>(args);  // (R, K), empty when d input is not wanted
    const auto& inp = std::get<4>(args);
    const auto& w = std::get<5>(args);
    return 2.0 * inp.extent(0) * inp.extent(1) * w.extent(0) * (dinp.data() ? 2 : 1);
  } else if constexpr (std::is_same_v<Op, op::attention_forward>) {
    const auto& q = std::get<2>(args);  // (B, T, C)
    const auto& k = std::get<3>(args);  // (B, S, C)
    return 4.0 * q.extent(0) * q.extent(1) * k.extent(1) * q.extent(2);
  } else {
    return 0;
  }
}

struct profiled_onednn : onednn_backend {
  using memory_space = host_space;
  static constexpr const char* name = "onednn (profiled)";
  std::map<std::string, op_stats> stats;
};

// The rows of a profile, the most time first.
inline std::vector<std::pair<std::string, op_stats>> by_time(const std::map<std::string, op_stats>& stats) {
  std::vector<std::pair<std::string, op_stats>> v(stats.begin(), stats.end());
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.second.seconds > y.second.seconds; });
  return v;
}


}  // namespace blip2::bench

template <class Op>
struct blip2::kernel<blip2::bench::profiled_onednn, Op> {
  template <class... A>
  static void run(bench::profiled_onednn& be, A&&... a) {
    const double t0 = bench::now_s();
    kernel<onednn_backend, Op>::run(static_cast<onednn_backend&>(be), a...);
    const double dt = bench::now_s() - t0;
    auto& s = be.stats[bench::profile_key<Op>(a...)];
    ++s.calls;
    s.seconds += dt;
    s.flops += bench::profile_flops<Op>(a...);
  }
};
