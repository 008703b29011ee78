// blip2/backend/onednn/onednn_backend.hpp: the oneDNN CPU backend (oneDNN 2.x API).
//
// The backend is a value that owns an engine, a stream, a cache of primitives keyed by op and shape
// (a primitive is created once per shape and reused, as oneDNN recommends), and scratch buffers that
// grow to the largest size seen (so a kernel call does not allocate once shapes repeat).
// Some kernels split their work over the OpenMP threads themselves (one parallel region, each thread
// running single-threaded primitives on its part: oneDNN runs sequentially inside a parallel region);
// each worker then has its own stream (worker_stream) and its own cached primitives.
// Kernels are float32; a double call (the tests' oracle precision) runs the reference kernel, and an op
// oneDNN lacks falls back to the reference through one explicit line in its file.
#pragma once
#include <dnnl.hpp>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "blip2/backend/backend.hpp"
#include "blip2/backend/reference/base.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

class onednn_backend {
 public:
  using memory_space = host_space;
  static constexpr const char* name = "onednn";

  onednn_backend()
      : engine_(dnnl::engine::kind::cpu, 0),
        stream_(engine_),
        split_(split_default()),
        attention_(attention_default()),
        linear_(linear_default()),
        bf16_kernel_(stream_kernel_default("BLIP2_ONEDNN_BF16", "reference")),
        f32_kernel_(stream_kernel_default("BLIP2_ONEDNN_F32", "onednn")) {}

  dnnl::engine& engine() { return engine_; }
  dnnl::stream& stream() { return stream_; }

  // Whether kernels split their work over the threads themselves (see the top of the file; matmul.hpp
  // and attention.hpp say how). On by default with GCC; off with clang, whose libomp is not the libgomp
  // that oneDNN runs on (oneDNN would not see our parallel region and would start threads inside it).
  // The environment variable BLIP2_ONEDNN_SPLIT=0 or =1 sets the default.
  bool split() const { return split_; }
  void set_split(bool on) { split_ = on; }
  // Which attention kernels run (attention.hpp): automatic (fused_attention.hpp's one pass per head for
  // small heads, oneDNN's batched primitives otherwise), or always one of the two where it applies.
  // fused_baseline is the fused kernel as compiled for any x86-64 (no AVX2/FMA), which is what CPUs
  // without AVX2 run: for testing that path on an AVX2 machine, and for results that do not depend on
  // whether the CPU fuses multiply-adds.
  // The environment variable BLIP2_ONEDNN_ATTENTION=auto|fused|fused-baseline|primitives sets the default.
  enum class attention_kernels { automatic, fused, fused_baseline, primitives };
  attention_kernels attention() const { return attention_; }
  void set_attention(attention_kernels k) { attention_ = k; }
  // The linear layers' matmul inputs (linear.hpp): float32, or bf16: both inputs of each of the three
  // products (forward, d input, d weight) rounded to bfloat16, products and sums in float32, output and
  // gradients float32; parameters stay float32 (the optimiser's master copy). That is the numerics of a
  // bf16 x bf16 -> f32 matmul, for studying what bfloat16 does to training. It runs at float32 speed
  // plus the rounding copies: oneDNN 2.6 has no bf16 matmul on CPUs without AVX-512 (models/vit/bf16.hpp).
  // It applies to float calls (double calls run the reference kernels, unrounded), and to linear layers
  // only: attention's products and op::matmul (the ITC similarities) stay float32.
  // The environment variable BLIP2_ONEDNN_LINEAR=f32|bf16 sets the default of every backend made after it
  // is set, the test programs' included (they expect f32).
  enum class linear_precision { f32, bf16 };
  linear_precision linear() const { return linear_; }
  void set_linear(linear_precision p) { linear_ = p; }
  // Which version of our streaming kernel (stream_linear.hpp: a few input rows, each weight read once, as
  // in an LLM's decode step) runs: the best this CPU has (automatic: AVX-512, else AVX2 + FMA), or one
  // named, for tests and benchmarks (naming one this CPU lacks makes the call throw backend_error), or
  // none (reference). Two settings, one per weight type:
  //   - bf16_kernel(): linear_bf16_forward (linear_bf16.hpp; oneDNN 2.6 has no bf16 matmul on AVX2 CPUs);
  //     reference, or no vector kernel on this CPU: the reference loop;
  //   - f32_kernel(): linear_forward's float32 calls that linear.hpp's dispatch rule sends to the kernel;
  //     reference, or no vector kernel on this CPU: oneDNN's matmul for every shape.
  // The environment variables BLIP2_ONEDNN_BF16=auto|avx512|avx2|reference and
  // BLIP2_ONEDNN_F32=auto|avx512|avx2|onednn set the defaults.
  enum class stream_kernels { automatic, avx512, avx2, reference };
  using bf16_kernels = stream_kernels;
  stream_kernels bf16_kernel() const { return bf16_kernel_; }
  void set_bf16_kernel(stream_kernels k) { bf16_kernel_ = k; }
  stream_kernels f32_kernel() const { return f32_kernel_; }
  void set_f32_kernel(stream_kernels k) { f32_kernel_ = k; }
  // The threads a kernel may split its work over: OpenMP's team size when split() is on; 1 when it is
  // off, inside a parallel region, or without OpenMP.
  int split_threads() const {
#if defined(_OPENMP)
    return split_ && !omp_in_parallel() ? omp_get_max_threads() : 1;
#else
    return 1;
#endif
  }
  // Make sure worker streams 0..n-1 exist (call outside a parallel region), then worker_stream(t) is
  // thread t's stream: a oneDNN stream is not to be used by two threads at once.
  void prepare_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) workers_.emplace_back(engine_);
  }
  dnnl::stream& worker_stream(int t) { return workers_[static_cast<std::size_t>(t)]; }

  // The primitive stored under key, made by make() the first time the key is seen.
  template <class Make>
  dnnl::primitive& primitive(const std::string& key, Make&& make) {
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, make()).first;
    return it->second;
  }
  std::size_t cached_primitives() const { return cache_.size(); }

  // A float scratch buffer of at least n elements; slot names a buffer so two can be live at once.
  float* scratch(int slot, index_t n) {
    auto& buf = scratch_[slot];
    if (static_cast<index_t>(buf.size()) < n) buf.resize(static_cast<std::size_t>(n));
    return buf.data();
  }

  // Run a primitive and wait for it; oneDNN errors become backend_error.
  void execute(dnnl::primitive& p, const std::unordered_map<int, dnnl::memory>& args) {
    try {
      p.execute(stream_, args);
      stream_.wait();
    } catch (const dnnl::error& e) {
      throw backend_error(std::string("onednn: primitive execution failed: ") + e.what());
    }
  }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::vector<dnnl::stream> workers_;
  bool split_;
  attention_kernels attention_;
  linear_precision linear_;
  stream_kernels bf16_kernel_, f32_kernel_;
  std::unordered_map<std::string, dnnl::primitive> cache_;
  std::unordered_map<int, std::vector<float>> scratch_;

  static bool split_default() {
    if (const char* e = std::getenv("BLIP2_ONEDNN_SPLIT"); e && *e) return std::strcmp(e, "0") != 0;
#if defined(__clang__)
    return false;
#else
    return true;
#endif
  }
  static attention_kernels attention_default() {
    const char* e = std::getenv("BLIP2_ONEDNN_ATTENTION");
    if (e && std::strcmp(e, "fused") == 0) return attention_kernels::fused;
    if (e && std::strcmp(e, "fused-baseline") == 0) return attention_kernels::fused_baseline;
    if (e && std::strcmp(e, "primitives") == 0) return attention_kernels::primitives;
    if (e && *e && std::strcmp(e, "auto") != 0)
      throw backend_error(std::string("onednn: BLIP2_ONEDNN_ATTENTION is '") + e +
                          "', expected auto, fused, fused-baseline or primitives");
    return attention_kernels::automatic;
  }
  static linear_precision linear_default() {
    const char* e = std::getenv("BLIP2_ONEDNN_LINEAR");
    if (e && std::strcmp(e, "bf16") == 0) return linear_precision::bf16;
    if (e && *e && std::strcmp(e, "f32") != 0)
      throw backend_error(std::string("onednn: BLIP2_ONEDNN_LINEAR is '") + e + "', expected f32 or bf16");
    return linear_precision::f32;
  }
  // The default of a stream_kernels setting from environment variable `var`; `none` is its word for reference.
  static stream_kernels stream_kernel_default(const char* var, const char* none) {
    const char* e = std::getenv(var);
    if (e && std::strcmp(e, "avx512") == 0) return stream_kernels::avx512;
    if (e && std::strcmp(e, "avx2") == 0) return stream_kernels::avx2;
    if (e && std::strcmp(e, none) == 0) return stream_kernels::reference;
    if (e && *e && std::strcmp(e, "auto") != 0)
      throw backend_error(std::string("onednn: ") + var + " is '" + e + "', expected auto, avx512, avx2 or " + none);
    return stream_kernels::automatic;
  }
};

namespace onednn_detail {

using dims = dnnl::memory::dims;

template <class T, std::size_t R>
dims extents_of(const tensor_view<T, R>& v) {
  return dims(v.extents().begin(), v.extents().end());
}
template <class T, std::size_t R>
dims strides_of(const tensor_view<T, R>& v) {
  return dims(v.strides().begin(), v.strides().end());
}

// A float memory descriptor with the view's extents and strides.
template <class T, std::size_t R>
dnnl::memory::desc desc_of(const tensor_view<T, R>& v) {
  return dnnl::memory::desc(extents_of(v), dnnl::memory::data_type::f32, strides_of(v));
}

// A oneDNN memory over the view's buffer (no copy).
template <class T, std::size_t R>
dnnl::memory memory_of(onednn_backend& be, const tensor_view<T, R>& v) {
  return dnnl::memory(desc_of(v), be.engine(), const_cast<float*>(static_cast<const float*>(v.data())));
}
inline dnnl::memory memory_of(onednn_backend& be, const dnnl::memory::desc& d, const float* p) {
  return dnnl::memory(d, be.engine(), const_cast<float*>(p));
}

// "op|2x7|7x1|..." : a cache key from extents and strides.
inline void key_append(std::string& key, const dims& d) {
  key += '|';
  for (auto x : d) key += std::to_string(x) + ',';
}
template <class T, std::size_t R>
void key_append(std::string& key, const tensor_view<T, R>& v) {
  key_append(key, extents_of(v));
  key_append(key, strides_of(v));
}
template <class... Views>
std::string make_key(std::string_view op, const Views&... views) {
  std::string key(op);
  (key_append(key, views), ...);
  return key;
}

// Runs body(t, nt) on every thread of a team of up to `parts` OpenMP threads (t the thread, nt the
// team's size, which may be smaller than asked; without OpenMP, once with (0, 1)). An exception in a
// body becomes one backend_error after the region (none may leave it).
template <class Body>
void run_workers(int parts, Body&& body) {
  bool failed = false;
  std::string what;
#pragma omp parallel num_threads(parts)
  {
    int t = 0, nt = 1;
#if defined(_OPENMP)
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    try {
      body(t, nt);
    } catch (const std::exception& e) {
#pragma omp critical(blip2_onednn_workers)
      {
        failed = true;
        what = e.what();
      }
    }
  }
  (void)parts;
  if (failed) throw backend_error(std::string("onednn: primitive execution failed: ") + what);
}

// Build a primitive, turning oneDNN's "unimplemented" into a backend_error that names the op.
template <class F>
auto build(std::string_view op, F&& f) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    throw backend_error(std::string("onednn: cannot create primitive for ") + std::string(op) + ": " + e.what());
  }
}

}  // namespace onednn_detail
}  // namespace blip2
