// bench_image_pass: the Q-Former image pass at BLIP-2 sizes, end to end, against the machine's practical
// peak and against PyTorch, all in one invocation.
//
// The pass (ITC image side, inference): encode_image_kv (the cross-attention keys/values of the image, six
// (B N, E) x (E, C) projections each for K and V) + qformer_forward with the 32 queries, evaluation mode.
// Sizes: L 12 layers, C 768, NH 12, F 3072, Q 32 queries, N 257 image tokens of width E 1408, B 1 and 8.
// Printed beside it, measured in the same run:
//   - the practical peak: a large oneDNN f32 matmul (2048 x 2048 x 2048), at the start and at the end;
//     "% peak" is against the larger of the two (a busy machine shows as a gap between them);
//   - PyTorch eager (benchmarks/peers/image_pass_torch.py, run by /usr/bin/python3 with the same thread
//     count): the same pass written from scratch in torch, float32 and bf16 autocast, on the SAME weights
//     and images (both sides generate them from one counter-based hash), so the outputs are compared too;
//   - the oneDNN backend with set_split(false) ("no split": oneDNN threads each primitive itself, as the
//     kernels did before they split the work over the threads), timed alternately with the default one;
//   - the reference backend at B = 1 (at B = 8 it takes a minute per pass: --reference-b8 runs it);
//   - bfloat16: whether oneDNN offers a bf16 matmul on this CPU, and its speed against f32 when it does;
//     PyTorch's bf16 autocast (B = 1: seconds per pass without native bf16), its error against its own
//     float32, and a torch.mm bf16 vs f32 probe.
// Also checked: the oneDNN primitive cache does not grow after the first pass (nothing re-created), and
// the outputs agree (oneDNN vs reference vs PyTorch, B = 1).
// Order: peak, oneDNN passes, PyTorch float32, then the slow parts (bf16 autocast, the reference), then
// the peak again, so that the comparisons that count are made close together in time.
// GFLOP counts 2 per multiply-add of the matmuls (linear layers and attention's q k^T and p v), from the
// shapes of the pass (and, with --profile, re-counted from the shapes the kernels actually received);
// LayerNorm, GELU and softmax are not counted (under 0.1% of it).
//
// Usage: bench_image_pass [--quick] [--reps N] [--threads N] [--batches 1,8] [--profile] [--no-peer]
//                         [--no-bf16-peer] [--peer PATH] [--python PATH] [--no-reference] [--reference-b8]
//   --quick      3 timed runs per case (default 10) and 1 bf16 autocast run in the peer (default 2)
//   --threads    OpenMP threads for oneDNN and the reference (default: OMP_NUM_THREADS or all cores);
//                the peer gets torch.set_num_threads with the same number
//   --profile    also a per-op breakdown of the oneDNN pass (calls, ms, share, GFLOP/s per shape);
//                the environment variable BLIP2_PROFILE=1 does the same
// Every timed case runs once first (primitive creation, first touch), then `reps` times; medians.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_common.hpp"
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/models/qformer/pass.hpp"

#ifndef BLIP2_PEER_SCRIPT
#define BLIP2_PEER_SCRIPT "benchmarks/peers/image_pass_torch.py"
#endif

using namespace blip2;
using namespace blip2::bench;

namespace {

constexpr index_t Q = 32, N = 257, E = 1408;

struct settings : peer_flags {
  bool quick = false, bf16_peer = true, reference = true, reference_b8 = false;
  std::vector<index_t> batches{1, 8};
  int bf16_reps = 2;
  settings() { reps = 10; peer_script = BLIP2_PEER_SCRIPT; }
} cfg;

// Two cases measured alternately (A B A B ...: a machine whose load changes treats both alike).
template <class FnA, class FnB>
std::pair<timing, timing> measure_pair(FnA&& a, FnB&& b, int reps) {
  a();
  b();
  std::vector<double> ta, tb;
  for (int r = 0; r < reps; ++r) {
    double t0 = now_s();
    a();
    ta.push_back(now_s() - t0);
    t0 = now_s();
    b();
    tb.push_back(now_s() - t0);
  }
  return {summarize(ta), summarize(tb)};
}

// The images (B, N, E), flattened from the hash at image_ordinal (image 0 is the same for every B); the
// weights: fill_hashed. The peer generates both the same way (peers/peer_common.py).
host_tensor<float, 3> make_images(index_t B) {
  host_tensor<float, 3> img({B, N, E});
  for (index_t i = 0; i < img.size(); ++i) img[i] = unit(image_ordinal, static_cast<std::uint64_t>(i));
  return img;
}

flop_count pass_flops(const qformer_config& q, index_t B) { return image_pass_flops(q, B, Q, N, E); }

template <class V>
std::string shape_of(const V& v) {
  std::string s = "(";
  for (std::size_t d = 0; d < V::rank; ++d) {
    if (d) s += ',';
    s += std::to_string(v.extent(d));
  }
  return s + ")";
}

}  // namespace

// ---- the per-op profile (--profile): each kernel call under its op name and shape ----
template <class Op, class... A>
std::string bench::profile_key(const A&... a) {
  std::string key(Op::name);
  const auto args = std::forward_as_tuple(a...);
  if constexpr (std::is_same_v<Op, op::linear_forward>) {
    const auto& inp = std::get<1>(args);
    key += " " + std::to_string(inp.extent(0)) + "x" + std::to_string(inp.extent(1)) + " -> " +
           std::to_string(std::get<2>(args).extent(0));
  } else if constexpr (std::is_same_v<Op, op::attention_forward>) {
    const auto& q = std::get<2>(args);
    key += " B" + std::to_string(q.extent(0)) + " T" + std::to_string(q.extent(1)) + " S" +
           std::to_string(std::get<3>(args).extent(1));
  } else if constexpr (std::is_same_v<Op, op::layer_norm_forward> || std::is_same_v<Op, op::gelu_forward> ||
                       std::is_same_v<Op, op::copy> || std::is_same_v<Op, op::axpy>) {
    key += " " + shape_of(std::get<0>(args));
  }
  return key;
}

namespace {

// One image pass: the image K/V, then the queries through the 12 layers.
template <class Be>
void image_pass(Be& be, const qformer_model<float>& m, image_kv_state<float>& kv, qformer_pass_state<float>& st,
                const host_tensor<float, 3>& images) {
  encode_image_kv(be, m, kv, images.view());
  qformer_pass_inputs<float> in;
  in.batch = images.extent(0);
  in.queries = true;
  in.image = &kv;
  qformer_forward(be, m, st, in);
}

// ---- the PyTorch peer ----
struct peer_row {
  std::string dtype;
  index_t B = 0;
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int runs = 0;
};
struct peer_result {
  bool ok = false;
  std::string note, json;
  std::vector<peer_row> rows;
  double others = -1;  // cores other processes used while it ran
  double mm_f32_gflops = 0, mm_bf16_gflops = 0, mm_n = 0;  // its n^3 torch.mm probe, when run
  const peer_row* find(const std::string& dtype, index_t B) const {
    for (const auto& r : rows)
      if (r.dtype == dtype && r.B == B) return &r;
    return nullptr;
  }
};

peer_result run_peer(int threads, const std::string& batches, const std::string& dump_dir) {
  peer_result r;
  r.note = peer_unavailable(cfg.python, cfg.peer_script);
  if (!r.note.empty()) return r;
  std::string cmd = cfg.python + " " + cfg.peer_script + " --threads " + std::to_string(threads) + " --batches " +
                    batches + " --reps " + std::to_string(cfg.reps) + " --dump " + dump_dir;
  if (cfg.bf16_peer)
    cmd += " --bf16 --bf16-batches 1 --bf16-reps " + std::to_string(cfg.bf16_reps) + " --matmul-probe 1024";
  r.note = run_peer_command(cmd, [&](const std::string& line) { r.json += line; });
  if (!r.note.empty()) return r;
  std::size_t pos = 0;
  while (pos < r.json.size()) {
    const auto end = r.json.find('\n', pos);
    const std::string line = r.json.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? r.json.size() : end + 1;
    peer_row row;
    std::string v;
    if (line.find("\"matmul_probe\": {") != std::string::npos) {
      const auto f = line.find("\"float32\""), b = line.find("\"bfloat16\"");
      if (f != std::string::npos && b != std::string::npos && json_field(line.substr(f, b - f), "gflops", v)) {
        r.mm_f32_gflops = std::stod(v);
        if (json_field(line.substr(b), "gflops", v)) r.mm_bf16_gflops = std::stod(v);
        if (json_field(line.substr(f), "n", v)) r.mm_n = std::stod(v);
      }
      continue;
    }
    if (!json_field(line, "dtype", row.dtype) || !json_field(line, "B", v)) continue;
    row.B = std::stoll(v);
    if (json_field(line, "median_ms", v)) row.median_ms = std::stod(v);
    if (json_field(line, "min_ms", v)) row.min_ms = std::stod(v);
    if (json_field(line, "max_ms", v)) row.max_ms = std::stod(v);
    if (json_field(line, "runs", v)) row.runs = std::stoi(v);
    r.rows.push_back(row);
  }
  r.ok = !r.rows.empty();
  if (!r.ok) r.note = "no result rows in the peer's output";
  return r;
}

// ---- bfloat16 on this CPU: can oneDNN make a bf16 matmul (bf16 x bf16 -> f32), and how fast is it? ----
void bf16_probe(double f32_gflops, index_t P) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl::memory::desc a({P, P}, dt::bf16, tag::ab), b({P, P}, dt::bf16, tag::ab), c({P, P}, dt::f32, tag::ab);
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
    dnnl::matmul mm(pd);
    dnnl::memory am(a, eng), bm(b, eng), cm(c, eng);
    std::memset(am.get_data_handle(), 0, static_cast<std::size_t>(P * P * 2));
    std::memset(bm.get_data_handle(), 0, static_cast<std::size_t>(P * P * 2));
    const timing t = measure(
        [&] {
          mm.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
          s.wait();
        },
        cfg.quick ? 2 : 5);
    const double g = 2.0 * P * P * P / t.median_s * 1e-9;
    std::printf("bf16: oneDNN bf16 x bf16 -> f32 matmul %ld^3 runs %s: %.1f ms, %.1f GFLOP/s = %.2fx the f32 matmul\n",
                static_cast<long>(P), pd.impl_info_str(), t.median_s * 1e3, g, g / f32_gflops);
  } catch (const dnnl::error& e) {
    std::printf("bf16: oneDNN %d.%d.%d has no bf16 matmul on this CPU (\"%s\"): no bf16 path for the oneDNN backend "
                "here (it needs AVX512-BF16 / AMX, or at least AVX512 for emulation)\n",
                dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch, e.what());
  }
}

struct result_row {
  std::string backend;
  index_t B;
  timing t;
  double gflop;  // per pass
  std::string note;
  double others = -1;  // cores other processes used meanwhile (-1: not measured)
};

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return flag_value(argc, argv, i); };
    if (a == "--quick") cfg.quick = true, cfg.reps = 3, cfg.bf16_reps = 1;
    else if (read_peer_flag(a, next, cfg)) continue;
    else if (a == "--no-bf16-peer") cfg.bf16_peer = false;
    else if (a == "--reference-b8") cfg.reference_b8 = true;
    else if (a == "--no-reference") cfg.reference = false;
    else if (a == "--batches") {
      cfg.batches = split_indices(next());
    }
    else {
      std::fprintf(stderr,
                   "usage: bench_image_pass [--quick] [--reps N] [--threads N] [--batches 1,8] [--profile] [--no-peer] "
                   "[--no-bf16-peer] [--peer PATH] [--python PATH] [--no-reference] [--reference-b8]\n");
      return 2;
    }
  }
  if (const char* e = std::getenv("BLIP2_PROFILE"); e && *e && std::strcmp(e, "0") != 0) cfg.profile = true;
  const int threads = set_threads(cfg.threads);
  const double start = now_s();
  print_banner("bench_image_pass", cfg.quick, threads);
  std::printf("each case: 1 untimed run, then %d timed; medians\n\n", cfg.reps);

  onednn_backend be;
  // ---- the practical peak: one large f32 matmul through oneDNN ----
  const index_t P = 2048;
  peak_operands peak_ab(P);
  auto peak = [&](const char* when) { return print_peak(be, peak_ab, when, cfg.quick ? 5 : 10); };
  const double peak_start = peak("start");
  bf16_probe(peak_start, P);

  // ---- the model: BLIP-2 sizes, no text side (the image pass never reads it) ----
  qformer_model_config mc;
  mc.with_text = false;
  qformer_model<float> m(mc);
  fill_hashed(m);
  const auto& qc = mc.qformer;
  {
    const flop_count f = pass_flops(qc, 1);
    std::printf("\nimage pass: %ld layers, C %ld, NH %ld, F %ld, Q %ld queries, N %ld image tokens of width E %ld\n",
                static_cast<long>(qc.num_hidden_layers), static_cast<long>(qc.hidden_size),
                static_cast<long>(qc.num_attention_heads), static_cast<long>(qc.intermediate_size), static_cast<long>(Q),
                static_cast<long>(N), static_cast<long>(E));
    std::printf("FLOP per image (2 per multiply-add, from the shapes): %.3f GFLOP = %.3f image K/V projections "
                "(%.1f%%) + %.3f the rest\n\n",
                f.total() * 1e-9, f.kv * 1e-9, 100 * f.kv / f.total(), f.rest * 1e-9);
  }

  std::vector<result_row> rows;
  std::vector<float> onednn_b1_out, reference_b1_out;
  const std::vector<index_t>& batches = cfg.batches;
  for (index_t B : batches) {
    const auto images = make_images(B);
    image_kv_state<float> kv;
    qformer_pass_state<float> st;
    const double gflop = pass_flops(qc, B).total() * 1e-9;
    // the backend as it comes (its kernels split the work over the threads themselves), alternating
    // with one that leaves the threading to oneDNN (set_split(false): the kernels before that change)
    onednn_backend plain;
    plain.set_split(false);
    image_kv_state<float> kv2;
    qformer_pass_state<float> st2;
    std::size_t cached_after_first = 0;
    int calls = 0;
    const auto c0 = cpu_now();
    const auto [t, t_plain] = measure_pair(
        [&] {
          image_pass(be, m, kv, st, images);
          if (++calls == 1) cached_after_first = be.cached_primitives();
        },
        [&] { image_pass(plain, m, kv2, st2, images); }, cfg.reps);
    std::printf("onednn    B=%ld: %.1f ms median (min %.1f, max %.1f); with oneDNN's own threading %.1f ms (min %.1f, "
                "max %.1f); load average %s\n",
                static_cast<long>(B), t.median_s * 1e3, t.min_s * 1e3, t.max_s * 1e3, t_plain.median_s * 1e3,
                t_plain.min_s * 1e3, t_plain.max_s * 1e3, loadavg().c_str());
    std::printf("          oneDNN primitives cached: %zu after the first pass, %zu after all (%s)\n", cached_after_first,
                be.cached_primitives(),
                be.cached_primitives() == cached_after_first ? "none re-created" : "SOME RE-CREATED");
    std::fflush(stdout);
    const double others = others_cores(c0, cpu_now());
    rows.push_back({"blip2 onednn f32", B, t, gflop, "", others});
    rows.push_back({"blip2 onednn, no split", B, t_plain, gflop, "", others});
    if (B == 1) onednn_b1_out.assign(st.output().data(), st.output().data() + st.output().size());

    if (cfg.profile) {
      profiled_onednn pbe;
      image_kv_state<float> pkv;
      qformer_pass_state<float> pst;
      image_pass(pbe, m, pkv, pst, images);  // warm-up: primitives
      pbe.stats.clear();
      const int preps = std::max(1, cfg.reps / 2);
      const double t0 = now_s();
      for (int r = 0; r < preps; ++r) image_pass(pbe, m, pkv, pst, images);
      const double total = (now_s() - t0) / preps;
      const auto v = by_time(pbe.stats);
      double in_ops = 0, counted = 0;
      for (const auto& [k, s] : v) in_ops += s.seconds / preps, counted += s.flops / preps;
      std::printf("\nper-op breakdown, oneDNN, B=%ld (mean of %d passes: %.1f ms a pass, %.1f ms in kernels; FLOP "
                  "counted from the kernels' shapes: %.3f GFLOP per image)\n",
                  static_cast<long>(B), preps, total * 1e3, in_ops * 1e3, counted / B * 1e-9);
      std::printf("  %-44s %6s %10s %7s %9s\n", "op and shape", "calls", "ms/pass", "share", "GFLOP/s");
      for (const auto& [k, s] : v) {
        char rate[32] = "";
        if (s.flops > 0) std::snprintf(rate, sizeof rate, "%9.1f", s.flops / s.seconds * 1e-9);
        std::printf("  %-44s %6d %10.3f %6.1f%% %9s\n", k.c_str(), s.calls / preps, s.seconds / preps * 1e3,
                    100 * s.seconds / preps / total, rate);
      }
      std::printf("  %-44s %6s %10.3f %6.1f%%\n\n", "(outside kernels: model code, fills, checks)", "",
                  (total - in_ops) * 1e3, 100 * (total - in_ops) / total);
      std::fflush(stdout);
    }

  }

  // ---- PyTorch, same threads, same weights, same images ----
  const auto dump = std::filesystem::temp_directory_path() / ("bench_image_pass." + std::to_string(::getpid()));
  peer_result peer;
  if (cfg.peer) {
    std::printf("\n");
    const auto c0 = cpu_now();
    peer = run_peer(threads, join(batches), dump.string());
    peer.others = others_cores(c0, cpu_now());
    if (peer.ok)
      std::printf("%s", peer.json.c_str());
    else
      std::printf("PyTorch peer skipped: %s\n", peer.note.c_str());
  } else {
    peer.note = "--no-peer";
  }
  for (const auto& r : peer.rows) {
    timing t;
    t.median_s = r.median_ms * 1e-3, t.min_s = r.min_ms * 1e-3, t.max_s = r.max_ms * 1e-3, t.runs = r.runs;
    rows.push_back({"pytorch " + r.dtype, r.B, t, pass_flops(qc, r.B).total() * 1e-9, "", peer.others});
  }
  // ---- the reference backend (last: slow, and the comparisons above are best made close together) ----
  for (index_t B : batches) {
    const double gflop = pass_flops(qc, B).total() * 1e-9;
    const auto images = make_images(B);
    if (!cfg.reference) {
      rows.push_back({"blip2 reference f32", B, {}, gflop, "skipped: --no-reference"});
    } else if (B == 1 || cfg.reference_b8) {
      reference_backend ref;
      image_kv_state<float> rkv;
      qformer_pass_state<float> rst;
      const auto c0 = cpu_now();
      const timing rt = measure([&] { image_pass(ref, m, rkv, rst, images); }, std::max(1, std::min(cfg.reps, 3)));
      const double others = others_cores(c0, cpu_now());
      std::printf("reference B=%ld: %.1f ms median of %d, load average %s\n", static_cast<long>(B), rt.median_s * 1e3,
                  rt.runs, loadavg().c_str());
      rows.push_back({"blip2 reference f32", B, rt, gflop, "", others});
      if (B == 1) reference_b1_out.assign(rst.output().data(), rst.output().data() + rst.output().size());
    } else {
      rows.push_back({"blip2 reference f32", B, {}, gflop,
                      "skipped: about a minute per pass (naive loops); --reference-b8 runs it"});
    }
  }
  if (peer.ok && cfg.bf16_peer && !peer.find("bf16 autocast", 8) && std::count(batches.begin(), batches.end(), 8))
    rows.push_back({"pytorch bf16 autocast", 8, {}, 0, "skipped: B=1 only (tens of seconds per pass here)"});
  std::printf("\n");
  const double peak_end = peak("end"), pk = std::max(peak_start, peak_end);  // "% peak" against the higher

  // ---- the table ----
  std::printf("\n%-22s %2s %5s %11s %9s %9s %7s %11s %7s\n", "backend", "B", "runs", "median ms", "images/s", "GFLOP/s",
              "% peak", "vs PyTorch", "others");
  std::printf("%s\n", std::string(90, '-').c_str());
  for (index_t B : batches)
    for (const auto& r : rows) {
      if (r.B != B) continue;
      if (r.t.runs == 0) {
        std::printf("%-22s %2ld   %s\n", r.backend.c_str(), static_cast<long>(B), r.note.c_str());
        continue;
      }
      const double g = r.gflop / r.t.median_s;
      char vs[32] = "";
      if (const auto* pr = peer.find("float32", B))
        std::snprintf(vs, sizeof vs, "%9.2fx", pr->median_ms * 1e-3 / r.t.median_s);
      char others[16] = "";
      if (r.others >= 0) std::snprintf(others, sizeof others, "%7.2f", r.others);
      std::printf("%-22s %2ld %5d %11.1f %9.2f %9.1f %6.1f%% %11s %7s\n", r.backend.c_str(), static_cast<long>(B),
                  r.t.runs, r.t.median_s * 1e3, B / r.t.median_s, g, 100 * g / pk, vs, others);
    }
  std::printf("%% peak: against %.1f GFLOP/s (oneDNN f32 2048^3 matmul, the larger of start %.1f and end %.1f);\n"
              "vs PyTorch: PyTorch float32's median time / this row's (> 1: faster than PyTorch f32);\n"
              "others: cores that other processes used meanwhile (> 0.1: a busy machine, the timing is inflated)\n",
              pk, peak_start, peak_end);

  // ---- outputs against each other (B = 1, the (Q, C) query outputs) ----
  std::printf("\noutputs at B=1 (max |a - b| / max |b|, rms(a - b) / rms(b)):\n");
  if (!reference_b1_out.empty()) {
    const auto e = compare(onednn_b1_out.data(), reference_b1_out.data(), onednn_b1_out.size());
    std::printf("  blip2 onednn f32   vs blip2 reference f32: %.2e, %.2e\n", e.max_rel, e.rms_rel);
  }
  const auto torch_f32 = read_floats(dump / "torch_f32.bin");
  const auto torch_bf16 = read_floats(dump / "torch_bf16.bin");
  if (!torch_f32.empty() && torch_f32.size() == onednn_b1_out.size()) {
    const auto e = compare(onednn_b1_out.data(), torch_f32.data(), torch_f32.size());
    std::printf("  blip2 onednn f32   vs pytorch float32:     %.2e, %.2e  (same weights: the peer computes the same pass)\n",
                e.max_rel, e.rms_rel);
  }
  if (torch_bf16.size() == torch_f32.size() && !torch_f32.empty()) {
    const auto e = compare(torch_bf16.data(), torch_f32.data(), torch_f32.size());
    std::printf("  pytorch bf16 autocast vs pytorch float32:  %.2e, %.2e\n", e.max_rel, e.rms_rel);
  }
  if (!peer.ok) std::printf("  (no PyTorch outputs: %s)\n", peer.note.c_str());
  if (peer.mm_n > 0)
    std::printf("\nbf16 in PyTorch %s here: torch.mm %.0f^3 bfloat16 %.1f GFLOP/s vs float32 %.1f GFLOP/s (%.2fx)\n",
                peer.mm_bf16_gflops > peer.mm_f32_gflops ? "pays" : "does not pay", peer.mm_n, peer.mm_bf16_gflops,
                peer.mm_f32_gflops, peer.mm_bf16_gflops / peer.mm_f32_gflops);
  std::error_code ec;
  std::filesystem::remove_all(dump, ec);
  std::printf("\ntotal %.1f s; load average at the end %s\n", now_s() - start, loadavg().c_str());
  return 0;
}
