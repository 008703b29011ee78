// bench_attention: the oneDNN backend's two attention kernels side by side, forward and backward, at the
// shapes of the stage-1 demo and of BLIP-2: fused_attention.hpp's one pass per head, and the batched
// oneDNN primitives (matmul + softmax_v2). It is the measurement behind fused_attention_preferred().
//
//   bench_attention [--threads N] [--reps R]
//
// Each line: the shape, the median time of each kernel over R calls (after one untimed call), and the
// primitives' time over the fused kernel's (> 1: fused is faster), with the CPU other processes took.
#include <cstdio>
#include <string>

#include "bench_common.hpp"
#include "blip2/models/qformer/masks.hpp"
#include "blip2/nn/attention.hpp"

using namespace blip2;
using namespace blip2::bench;

namespace {

host_tensor<float, 3> hashed(extents_t<3> e, std::uint64_t ordinal) {
  host_tensor<float, 3> x(e);
  for (index_t i = 0; i < x.size(); ++i) x[i] = unit(ordinal, static_cast<std::uint64_t>(i));
  return x;
}

template <class Mask>
void row(const char* what, index_t B, index_t T, index_t S, index_t C, index_t NH, const Mask& mask, int reps) {
  const auto q = hashed({B, T, C}, 1), k = hashed({B, S, C}, 2), v = hashed({B, S, C}, 3), dout = hashed({B, T, C}, 4);
  host_tensor<float, 3> out({B, T, C}), dq({B, T, C}), dk({B, S, C}), dv({B, S, C});
  host_tensor<float, 4> probs({B, NH, T, S});
  const attention_cache<float> cache{probs.view()};
  double ms[2][2];  // [kernel: fused, primitives][forward, backward]
  const auto c0 = cpu_now();
  int k_i = 0;
  for (auto kind : {onednn_backend::attention_kernels::fused, onednn_backend::attention_kernels::primitives}) {
    onednn_backend be;
    be.set_attention(kind);
    ms[k_i][0] = 1e3 * measure([&] { attention_forward(be, out, cache, q, k, v, NH, mask, no_padding); }, reps).median_s;
    ms[k_i][1] = 1e3 * measure([&] {
      attention_backward(be, dq, dk, dv, dout, q, k, v, cache, NH, mask, no_padding);
    }, reps).median_s;
    ++k_i;
  }
  const bool preferred = onednn_detail::fused_attention_preferred(T, S, C / NH);
  std::printf("%-26s B %3ld T %3ld S %3ld C %3ld NH %2ld | fwd fused %8.3f ms primitives %8.3f ms (x%.2f) | "
              "bwd fused %8.3f ms primitives %8.3f ms (x%.2f) | auto: %s | others %.2f cores\n",
              what, static_cast<long>(B), static_cast<long>(T), static_cast<long>(S), static_cast<long>(C),
              static_cast<long>(NH), ms[0][0], ms[1][0], ms[1][0] / ms[0][0], ms[0][1], ms[1][1], ms[1][1] / ms[0][1],
              preferred ? "fused" : "primitives", others_cores(c0, cpu_now()));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, reps = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_attention [--threads N] [--reps R]\n");
      return 2;
    }
  }
  threads = set_threads(threads);
  print_banner("bench_attention", false, threads);
  // the stage-1 demo: C 64, 4 heads, 4 queries, 12 text tokens, 16 image tokens, batch 48 (ITM: 144 pairs)
  row("demo query self", 48, 4, 4, 64, 4, bidirectional{}, reps);
  row("demo text self (ITC)", 48, 12, 12, 64, 4, bidirectional{}, reps);
  row("demo cross", 48, 4, 16, 64, 4, bidirectional{}, reps);
  row("demo ITG self", 48, 16, 16, 64, 4, multimodal_causal_mask{4}, reps);
  row("demo ITM joint self", 144, 16, 16, 64, 4, bidirectional{}, reps);
  row("demo ITM cross", 144, 4, 16, 64, 4, bidirectional{}, reps);
  // BLIP-2: C 768, 12 heads, 32 queries, 32 text tokens, 257 image tokens, batch 8 (ITM: 24 pairs)
  row("BLIP-2 query self", 8, 32, 32, 768, 12, bidirectional{}, reps);
  row("BLIP-2 ITG self", 8, 64, 64, 768, 12, multimodal_causal_mask{32}, reps);
  row("BLIP-2 ITM joint self", 24, 64, 64, 768, 12, bidirectional{}, reps);
  row("BLIP-2 cross", 8, 32, 257, 768, 12, bidirectional{}, reps);
  row("BLIP-2 ITM cross", 24, 32, 257, 768, 12, bidirectional{}, reps);
  return 0;
}
