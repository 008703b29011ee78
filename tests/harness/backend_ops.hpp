// tests/harness/backend_ops.hpp: the backend conformance harness (in the spirit of ggml's
// test-backend-ops).
//
// A case makes its inputs in double, runs the reference backend in double (the oracle), then runs every
// backend under test in float32 on the same values rounded to float, and compares each named output:
//   - NaN/Inf parity: the same positions are non-finite, with the same sign for infinities;
//   - normalised mean squared error over the finite elements, sum (x - ref)^2 / sum ref^2 <= max_nmse;
//   - integer outputs (argmax, ...) exactly;
//   - the guard elements after every buffer unchanged (an out-of-bounds write fails the case).
// Outputs that accumulate (parameter gradients) are pre-filled with random values, so a kernel that
// assigns where it should add fails too.
//
// Default tolerance: max_nmse = 1e-9. A float32 result carries a relative rounding error of about
// 6e-8 per operation; after a few hundred accumulated operations the elementwise relative error stays
// below ~1e-5, i.e. an NMSE below 1e-10. One wrong element among a few hundred of typical size gives an
// NMSE above 1e-4, five orders of magnitude over the threshold (the perturbation test checks this).
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "harness/buffers.hpp"
#if BLIP2_TEST_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#if BLIP2_TEST_CUDA
#include "harness/device_io.hpp"
#endif

namespace blip2::testing {

struct op_case {
  std::string op;    // the op tag's name: "layer_norm_forward"
  std::string desc;  // printable: "layer_norm_forward(R=7,C=13)"
  std::function<void(io<double>&)> init;
  std::vector<std::string> outputs;  // float or integer buffer names to compare
  double max_nmse = 1e-9;
  std::function<void(reference_backend&, io<double>&)> run_reference_double;
  std::function<void(reference_backend&, io<float>&)> run_reference_float;
#if BLIP2_TEST_ONEDNN
  std::function<void(onednn_backend&, io<float>&)> run_onednn;
#endif
#if BLIP2_TEST_CUDA
  std::function<void(cuda_backend&, device_io&)> run_cuda;
#endif
};

// Make a case from a generic lambda run(be, io) that is instantiated for every backend and precision.
template <class Run>
op_case make_case(std::string op, std::string desc, std::function<void(io<double>&)> init,
                  std::vector<std::string> outputs, Run run, double max_nmse = 1e-9) {
  op_case c;
  c.op = std::move(op);
  c.desc = std::move(desc);
  c.init = std::move(init);
  c.outputs = std::move(outputs);
  c.max_nmse = max_nmse;
  c.run_reference_double = [run](reference_backend& be, io<double>& x) { run(be, x); };
  c.run_reference_float = [run](reference_backend& be, io<float>& x) { run(be, x); };
#if BLIP2_TEST_ONEDNN
  c.run_onednn = [run](onednn_backend& be, io<float>& x) { run(be, x); };
#endif
#if BLIP2_TEST_CUDA
  c.run_cuda = [run](cuda_backend& be, device_io& x) { run(be, x); };
#endif
  return c;
}

struct comparison {
  bool ok = true;
  double nmse = 0;     // worst over outputs
  double max_rel = 0;  // max |x - ref| / max |ref|, worst over outputs
  std::string why;     // first failure
};

inline void fail(comparison& c, const std::string& why) {
  if (c.ok) c.why = why;
  c.ok = false;
}

template <class T>
comparison compare_outputs(const op_case& cs, const io<double>& ref, const io<T>& got, double max_nmse = -1) {
  if (max_nmse < 0) max_nmse = cs.max_nmse;
  comparison c;
  for (const auto& name : cs.outputs) {
    if (auto it = ref.i.find(name); it != ref.i.end()) {
      const auto& r = it->second;
      const auto& g = got.i.at(name);
      if (!g.guard_intact()) fail(c, name + ": guard elements overwritten");
      for (index_t k = 0; k < r.size(); ++k)
        if (r.data[k] != g.data[k]) {
          fail(c, name + "[" + std::to_string(k) + "] = " + std::to_string(g.data[k]) + ", reference " +
                      std::to_string(r.data[k]));
          break;
        }
      continue;
    }
    const auto& r = ref.f.at(name);
    const auto& g = got.f.at(name);
    if (!g.guard_intact()) fail(c, name + ": guard elements overwritten");
    double num = 0, den = 0, maxdiff = 0, maxref = 0;
    for (index_t k = 0; k < r.size(); ++k) {
      const double a = static_cast<double>(g.data[k]), b = r.data[k];
      if (!std::isfinite(a) || !std::isfinite(b)) {
        const bool same = (std::isnan(a) && std::isnan(b)) || (std::isinf(a) && std::isinf(b) && (a > 0) == (b > 0));
        if (!same) fail(c, name + "[" + std::to_string(k) + "]: non-finite mismatch (" + std::to_string(a) + " vs " +
                               std::to_string(b) + ")");
        continue;
      }
      num += (a - b) * (a - b);
      den += b * b;
      maxdiff = std::max(maxdiff, std::abs(a - b));
      maxref = std::max(maxref, std::abs(b));
    }
    const double nmse = den > 0 ? num / den : num;
    const double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    c.nmse = std::max(c.nmse, nmse);
    c.max_rel = std::max(c.max_rel, rel);
    if (!(nmse <= max_nmse)) fail(c, name + ": nmse " + std::to_string(nmse) + " > " + std::to_string(max_nmse));
  }
  return c;
}

// Change one element of output `which` (float: by 1% of the largest reference magnitude plus 1e-3;
// integer: by one; an all-NaN output: one element set to 0) to show that the comparison notices it.
template <class T>
void perturb(const op_case& cs, const io<double>& ref, io<T>& got, std::size_t which) {
  const auto& name = cs.outputs.at(which);
  if (auto it = got.i.find(name); it != got.i.end()) {
    if (it->second.size() > 0) it->second.data[0] += 1;
    return;
  }
  auto& g = got.f.at(name);
  const auto& r = ref.f.at(name);
  double maxref = 0;
  for (index_t k = 0; k < r.size(); ++k)
    if (std::isfinite(r.data[k])) maxref = std::max(maxref, std::abs(r.data[k]));
  if (g.size() == 0) return;
  // the first element from the middle on whose reference is finite; where there is none, turning a NaN
  // into a number must be caught by the NaN parity check
  for (index_t k = g.size() / 2, n = 0; n < g.size(); ++n, k = (k + 1) % g.size()) {
    if (std::isfinite(r.data[k])) {
      g.data[k] = static_cast<T>(g.data[k] + 0.01 * maxref + 1e-3);
      return;
    }
  }
  g.data[0] = 0;
}

struct run_result {
  std::string backend;
  std::string op;
  std::string desc;
  comparison cmp;
  bool skipped = false;  // the case is empty for zero-size shapes and the like
};

// Run one case on every backend; perturb_output >= 0 perturbs that output after each backend ran.
inline std::vector<run_result> run_case(const op_case& cs, long perturb_output = -1) {
  std::vector<run_result> results;
  io<double> ref;
  cs.init(ref);
  reference_backend rb;
  cs.run_reference_double(rb, ref);
  // max_nmse < 0: the case's own tolerance
  auto run_one = [&](const std::string& backend_name, auto&& run, double max_nmse = -1) {
    if (!selected(cs.desc + " " + backend_name)) return;
    io<double> fresh;
    cs.init(fresh);  // init is deterministic: the same inputs and pre-filled outputs as the oracle saw
    io<float> x = convert<float>(fresh);
    std::string error;
    try {
      run(x);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (perturb_output >= 0) perturb(cs, ref, x, static_cast<std::size_t>(perturb_output));
    run_result r{backend_name, cs.op, cs.desc, {}};
    if (!error.empty()) fail(r.cmp, "threw: " + error);
    const comparison cmp = compare_outputs(cs, ref, x, max_nmse);
    r.cmp.nmse = cmp.nmse;
    r.cmp.max_rel = cmp.max_rel;
    if (!cmp.ok) fail(r.cmp, cmp.why);
    results.push_back(std::move(r));
  };
  run_one("reference-f32", [&](io<float>& x) { cs.run_reference_float(rb, x); });
#if BLIP2_TEST_ONEDNN
  static onednn_backend ob;
  run_one("onednn", [&](io<float>& x) { cs.run_onednn(ob, x); });
  if (cs.op.rfind("attention", 0) == 0) {
    // attention has two oneDNN-backend kernels (fused for small heads, batched primitives otherwise):
    // every case runs through both, whichever the automatic choice takes, and the fused one also as
    // compiled for CPUs without AVX2 (this CPU would otherwise always take the AVX2 build)
    auto with = [](onednn_backend::attention_kernels k) {
      onednn_backend be;
      be.set_attention(k);
      return be;
    };
    static onednn_backend primitives = with(onednn_backend::attention_kernels::primitives);
    static onednn_backend fused = with(onednn_backend::attention_kernels::fused);
    static onednn_backend baseline = with(onednn_backend::attention_kernels::fused_baseline);
    run_one("onednn-primitives", [&](io<float>& x) { cs.run_onednn(primitives, x); });
    run_one("onednn-fused", [&](io<float>& x) { cs.run_onednn(fused, x); });
    run_one("onednn-fused-baseline", [&](io<float>& x) { cs.run_onednn(baseline, x); });
  }
  if (cs.op.rfind("linear_bf16", 0) == 0) {
    // linear_bf16_forward has two vector kernels (AVX-512; AVX2 + FMA, what AVX2-only CPUs run): every
    // case runs through each one this CPU has, whichever the automatic choice takes
    using bf16_kernels = onednn_backend::bf16_kernels;
    auto with = [](bf16_kernels k) {
      onednn_backend be;
      be.set_bf16_kernel(k);
      return be;
    };
    static onednn_backend avx512 = with(bf16_kernels::avx512), avx2 = with(bf16_kernels::avx2);
    if (onednn_detail::bf16_kernel_available(bf16_kernels::avx512))
      run_one("onednn-bf16-avx512", [&](io<float>& x) { cs.run_onednn(avx512, x); });
    if (onednn_detail::bf16_kernel_available(bf16_kernels::avx2))
      run_one("onednn-bf16-avx2", [&](io<float>& x) { cs.run_onednn(avx2, x); });
  }
  if (cs.op == "linear_forward") {
    // float32 linear_forward takes the streaming kernel at decode shapes (linear.hpp's use_stream_kernel):
    // every case runs through each vector version this CPU has, and through oneDNN's matmul forced
    using stream_kernels = onednn_backend::stream_kernels;
    auto with = [](stream_kernels k) {
      onednn_backend be;
      be.set_f32_kernel(k);
      return be;
    };
    static onednn_backend avx512 = with(stream_kernels::avx512), avx2 = with(stream_kernels::avx2),
                          matmul = with(stream_kernels::reference);
    if (onednn_detail::stream_kernel_available(stream_kernels::avx512))
      run_one("onednn-f32-avx512", [&](io<float>& x) { cs.run_onednn(avx512, x); });
    if (onednn_detail::stream_kernel_available(stream_kernels::avx2))
      run_one("onednn-f32-avx2", [&](io<float>& x) { cs.run_onednn(avx2, x); });
    run_one("onednn-f32-matmul", [&](io<float>& x) { cs.run_onednn(matmul, x); });
  }
#endif
#if BLIP2_TEST_CUDA
  if (cuda_available()) {
    // the CUDA backend as a user gets it, then each of its kernel variants where an op has several
    // backends made once and never destroyed: a static's destructor could run after the CUDA runtime has
    // shut down (its stream and cuBLAS handle would be released into a runtime that is gone)
    auto with = [](auto set) -> cuda_backend& {
      auto* be = new cuda_backend;
      set(*be);
      return *be;
    };
    auto run_cuda = [&](cuda_backend& be) {
      return [&](io<float>& x) {
        device_io d(be, x);
        cs.run_cuda(be, d);
        d.download();  // waits for the stream: a kernel's failure is thrown here
      };
    };
    static cuda_backend& cb = with([](cuda_backend&) {});
    run_one("cuda", run_cuda(cb));
    const bool gemm_op = cs.op == "matmul" || (cs.op.rfind("linear_", 0) == 0 && cs.op != "linear_bf16_forward");
    const bool attention_op = cs.op.rfind("attention", 0) == 0;
    if (attention_op) {
      static cuda_backend& fused = with([](cuda_backend& be) { be.set_attention(cuda_backend::attention_kernels::fused); });
      static cuda_backend& gemm = with([](cuda_backend& be) { be.set_attention(cuda_backend::attention_kernels::batched_gemm); });
      run_one("cuda-fused", run_cuda(fused));
      run_one("cuda-batched-gemm", run_cuda(gemm));
    }
    if ((gemm_op || attention_op) && perturb_output < 0) {  // (1e-4 would hide a perturbation in big outputs)
      // bf16 inputs, f32 accumulation: each input carries a relative rounding error up to 2^-9, so a
      // product's error is about 2^-8.5 relative and its square, averaged over the output, about 1e-5
      // (a float32 kernel stays below 1e-10). 1e-4 leaves a factor 10 for sums of unlucky signs; one
      // wrong element among a few hundred still gives an NMSE above 1e-4 (the perturbation test).
      static cuda_backend& bf16 = with([](cuda_backend& be) { be.set_matmul(cuda_backend::matmul_precision::bf16); });
      run_one("cuda-bf16", run_cuda(bf16), std::max(cs.max_nmse, 1e-4));
      if (attention_op) {  // the automatic choice takes the GEMMs in bf16: the fused kernel's bf16 too
        static cuda_backend& fused_bf16 = with([](cuda_backend& be) {
          be.set_matmul(cuda_backend::matmul_precision::bf16);
          be.set_attention(cuda_backend::attention_kernels::fused);
        });
        run_one("cuda-fused-bf16", run_cuda(fused_bf16), std::max(cs.max_nmse, 1e-4));
      }
    }
  }
#endif
  return results;
}

}  // namespace blip2::testing
