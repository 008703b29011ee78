// bench_basics.hpp: what every benchmark program shares that needs no backend: the clock, medians, the
// hashed weights the PyTorch peers repeat bit for bit, running a peer and reading its JSON, and the flags of
// the programs with a peer. bench_common.hpp adds the oneDNN parts (bench_gpu, a CUDA program, uses this alone).
//   clock                 now_s
//   medians               median, timing, summarize, measure (1 untimed call, then reps timed)
//   hashed weights        bits24, unit, fill_hashed: the counter-based hash of peers/peer_common.py
//   the PyTorch peers     peer_unavailable, run_peer_command, json_field / json_number / json_numbers, join
//   flags                 flag_value; peer_flags, read_peer_flag
//   FLOPs                 image_pass_flops: the Q-Former image pass's matmul work, from its shapes
//   outputs               read_floats (a peer's raw float32 dump), compare (max and rms relative error)
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "blip2/core/tensor_view.hpp"
#include "blip2/models/qformer/config.hpp"

namespace blip2::bench {

// ---- clock ----
inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- medians ----
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct timing {
  double median_s = 0, min_s = 0, max_s = 0;
  int runs = 0;
};
inline timing summarize(const std::vector<double>& t) {
  if (t.empty()) return {};
  return {median(t), *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()),
          static_cast<int>(t.size())};
}

// One untimed call, then reps timed calls; the median.
template <class Fn>
timing measure(Fn&& fn, int reps) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    fn();
    t.push_back(now_s() - t0);
  }
  return summarize(t);
}

// ---- hashed weights: splitmix64 of (ordinal << 32) + i, the same in peers/peer_common.py ----
// its top 24 bits
inline std::uint32_t bits24(std::uint64_t ordinal, std::uint64_t i) {
  std::uint64_t x = (ordinal << 32) + i + 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<std::uint32_t>(x >> 40);
}
// those bits as a float in [-1, 1)
inline float unit(std::uint64_t ordinal, std::uint64_t i) {
  return static_cast<float>(2.0 * static_cast<double>(bits24(ordinal, i)) / static_cast<double>(1u << 24) - 1.0);
}
// ordinals of the inputs, above any parameter's
constexpr std::uint64_t image_ordinal = 1u << 20, text_ordinal = 2u << 20;

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Parameter number k (for_each_parameter order) from ordinal k, u = unit(k, i): dense weights and
// embeddings 0.05 u, biases 0.02 u, LayerNorm weights 1 + 0.1 u and biases 0.02 u, query tokens u,
// temp 0.07 (LAVIS's initial value). The peers' make_model / make_params follow the same rule.
template <class Model>
void fill_hashed(Model& m) {
  std::uint64_t ordinal = 0;
  for_each_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
    const bool norm = name.find("LayerNorm.") != std::string::npos || name.find("layernorm.") != std::string::npos;
    float scale = 0.02f, shift = 0;
    if (name == "query_tokens")
      scale = 1;
    else if (name == "temp")
      scale = 0, shift = 0.07f;
    else if (norm && ends_with(name, ".weight"))
      scale = 0.1f, shift = 1;
    else if (ends_with(name, ".weight"))
      scale = 0.05f;
    float* p = v.data();
    for (index_t i = 0; i < v.size(); ++i) p[i] = shift + scale * unit(ordinal, static_cast<std::uint64_t>(i));
    ++ordinal;
  });
}

// ---- the PyTorch peers: a Python script run as a child process, its results as JSON on stdout ----
// Why `python` cannot run `script` ("" when it can): no interpreter, no script, or no torch and numpy
// (checked with a quick import, so that the reason can be printed instead of a traceback).
inline std::string peer_unavailable(const std::string& python, const std::string& script) {
  namespace fs = std::filesystem;
  if (!fs::exists(python)) return python + " not found";
  if (!fs::exists(script)) return script + " not found (run from the repository root, or give --peer PATH)";
  if (std::system((python + " -c 'import torch, numpy' >/dev/null 2>&1").c_str()) != 0)
    return python + " cannot import torch and numpy (apt-get install python3-torch)";
  return "";
}

// Prints "running the PyTorch peer: CMD", runs it, and hands each line of its stdout (with its '\n') to
// on_line as it comes; "" when it exits with status 0, else why not.
template <class OnLine>
std::string run_peer_command(const std::string& cmd, OnLine&& on_line) {
  std::printf("running the PyTorch peer: %s\n", cmd.c_str());
  std::fflush(stdout);
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "popen failed";
  std::string line;
  char buf[8192];
  while (std::fgets(buf, sizeof buf, p)) {
    line += buf;
    if (line.back() != '\n') continue;  // the rest of a long line is still to come
    on_line(line);
    line.clear();
  }
  if (!line.empty()) on_line(line);
  const int status = pclose(p);
  return status == 0 ? "" : "the peer exited with status " + std::to_string(status);
}

// The value after "key": in one JSON line: a number, a plain string, or a flat array of numbers as its text.
inline bool json_field(const std::string& line, const std::string& key, std::string& out) {
  const auto at = line.find("\"" + key + "\":");
  if (at == std::string::npos) return false;
  std::size_t p = at + key.size() + 3;
  while (p < line.size() && line[p] == ' ') ++p;
  if (p < line.size() && line[p] == '"') {
    const auto end = line.find('"', p + 1);
    out = line.substr(p + 1, end - p - 1);
  } else if (p < line.size() && line[p] == '[') {
    const auto end = line.find(']', p);
    out = line.substr(p + 1, end - p - 1);
  } else {
    const auto end = line.find_first_of(",}", p);
    out = line.substr(p, end - p);
  }
  return true;
}
inline double json_number(const std::string& line, const std::string& key, double fallback = NAN) {
  std::string v;
  if (!json_field(line, key, v) || v.empty() || v == "null") return fallback;
  return std::stod(v);
}
inline std::vector<double> json_numbers(const std::string& line, const std::string& key) {
  std::vector<double> out;
  std::string v;
  if (!json_field(line, key, v)) return out;
  for (std::size_t p = 0; p < v.size();) {
    const auto c = v.find(',', p);
    const std::string item = v.substr(p, c == std::string::npos ? std::string::npos : c - p);
    if (item.find_first_of("0123456789") != std::string::npos) out.push_back(std::stod(item));
    p = c == std::string::npos ? v.size() : c + 1;
  }
  return out;
}

// "1,8" -> {1, 8}: a list flag's value
inline std::vector<index_t> split_indices(const std::string& v) {
  std::vector<index_t> out;
  for (std::size_t p = 0; p < v.size();) {
    const auto c = v.find(',', p);
    out.push_back(std::stoll(v.substr(p, c - p)));
    p = c == std::string::npos ? v.size() : c + 1;
  }
  return out;
}

// "1,8": a list as the peers' flags take it
inline std::string join(const std::vector<index_t>& v) {
  std::string s;
  for (auto x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

// ---- flags ----
// The value of flag argv[i] (argv[i + 1], and i moves on to it); exits with status 2 when there is none.
inline std::string flag_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

// The flags that the programs with a PyTorch peer share: --reps N, --threads N, --profile, --no-peer,
// --peer PATH (the peer script), --python PATH. Each program's settings derive from it (its own defaults).
struct peer_flags {
  bool profile = false, peer = true;
  int reps = 0, threads = 0;
  std::string peer_script, python = "/usr/bin/python3";
};
// Whether `a` is one of them (then read into f, a value through next()).
template <class Next>
bool read_peer_flag(const std::string& a, Next&& next, peer_flags& f) {
  if (a == "--reps") f.reps = std::max(1, std::stoi(next()));
  else if (a == "--threads") f.threads = std::stoi(next());
  else if (a == "--profile") f.profile = true;
  else if (a == "--no-peer") f.peer = false;
  else if (a == "--peer") f.peer_script = next();
  else if (a == "--python") f.python = next();
  else return false;
  return true;
}
// ---- outputs: a peer's raw float32 dump, and how far apart two outputs are ----
// The file's floats (empty when it cannot be read).
inline std::vector<float> read_floats(const std::filesystem::path& path) {
  std::vector<float> v;
  std::ifstream f(path, std::ios::binary);
  if (!f) return v;
  f.seekg(0, std::ios::end);
  v.resize(static_cast<std::size_t>(f.tellg()) / sizeof(float));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

// max |a - b| / max |b|, and the rms of a - b over the rms of b
struct rel_error {
  double max_rel = 0, rms_rel = 0;
};
inline rel_error compare(const float* a, const float* b, std::size_t n) {
  double md = 0, mr = 0, sd = 0, sr = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    md = std::max(md, std::abs(d));
    mr = std::max(mr, std::abs(double(b[i])));
    sd += d * d;
    sr += double(b[i]) * b[i];
  }
  return {md / std::max(mr, 1e-30), std::sqrt(sd / std::max(sr, 1e-30))};
}

// ---- FLOPs of the Q-Former image pass (encode_image_kv + the queries through every layer), from its shapes:
// 2 per multiply-add of the linear layers and of attention's q k^T and p v; Q queries, N image tokens of
// width E, B images ----
struct flop_count {
  double kv = 0, rest = 0;
  double total() const { return kv + rest; }
};
inline flop_count image_pass_flops(const qformer_config& q, index_t B, index_t Q, index_t N, index_t E) {
  const double C = q.hidden_size, F = q.intermediate_size, R = double(Q) * B;
  flop_count f;
  for (index_t l = 0; l < q.num_hidden_layers; ++l) {
    f.rest += 4 * 2 * R * C * C + 4.0 * B * Q * Q * C + 2 * 2 * R * C * F;  // self q,k,v,o; q k^T, p v; FFN
    if (q.has_cross_attention(l)) {
      f.kv += 2 * 2.0 * B * N * E * C;                    // image K and V projections
      f.rest += 2 * 2 * R * C * C + 4.0 * B * Q * N * C;  // cross q, o; q k^T, p v
    }
  }
  return f;
}

}  // namespace blip2::bench
