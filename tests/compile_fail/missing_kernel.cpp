// compile_fail_missing_kernel: an op called on a backend that has no kernel for it must not compile, and
// the error must name the op and the way out (a kernel or an explicit reference_fallback line).
// Expected diagnostic: "has no kernel for op".
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/layer_norm.hpp"

// A well-formed backend (it satisfies the concept) that implements nothing.
struct bare_backend {
  using memory_space = blip2::host_space;
  static constexpr const char* name = "bare";
};

int main() {
  bare_backend be;
  blip2::host_tensor<float, 2> inp({2, 4}), out({2, 4});
  blip2::host_tensor<float, 1> w({4}), b({4}), mean({2}), rstd({2});
  blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, inp, w, b, 1e-5);
}
