// compile_fail_not_a_backend: a type that does not satisfy the blip2::backend concept (here: it has a
// name but no memory_space) is rejected where a backend goes: by a public op, and by user code
// constrained on the concept. The diagnostic names the concept.
// Expected diagnostic: "satisfaction of 'backend<...>'" (g++) or "does not satisfy 'backend'" (clang).
#include "blip2/backend/backend.hpp"
#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/layer_norm.hpp"

struct not_a_backend {
  static constexpr const char* name = "forgot its memory space";
};

// User code written against the concept, like the library's own entry points.
template <blip2::backend Be>
void train_step(Be&) {}

int main() {
  not_a_backend be;
  blip2::host_tensor<float, 2> inp({2, 4}), out({2, 4});
  blip2::host_tensor<float, 1> w({4}), b({4}), mean({2}), rstd({2});
  blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, inp, w, b, 1e-5);
  train_step(be);
}
