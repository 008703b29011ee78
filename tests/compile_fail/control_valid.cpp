// compile_control_valid: the same kind of code as the compile_fail_* files, written correctly. It must
// compile with the same harness, which proves that a compile_fail_* test fails for its own reason and
// not because the harness cannot build anything.
#include <array>
#include <vector>

#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/view.hpp"
#include "blip2/nn/layer_norm.hpp"

// A type with .data() and .shape() is a tensor.
struct row_vector {
  std::vector<float> v;
  float* data() { return v.data(); }
  std::array<int, 1> shape() const { return {static_cast<int>(v.size())}; }
};

// A backend that has no kernels of its own and falls back to the reference, explicitly, for one op.
struct thin_backend {
  using memory_space = blip2::host_space;
  static constexpr const char* name = "thin";
};
template <>
struct blip2::kernel<thin_backend, blip2::op::layer_norm_forward>
    : blip2::reference_fallback<blip2::op::layer_norm_forward> {};

static_assert(blip2::backend<thin_backend>);
static_assert(blip2::is_fallback<thin_backend, blip2::op::layer_norm_forward>());

int main() {
  blip2::reference_backend ref;
  thin_backend thin;
  blip2::host_tensor<float, 2> inp({2, 4}, 1.0f), out({2, 4});
  blip2::host_tensor<float, 1> w({4}, 1.0f), mean({2}), rstd({2});
  row_vector b{std::vector<float>(4, 0.0f)};
  auto v = blip2::view(inp);
  blip2::layer_norm_forward(ref, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, v, w, b, 1e-5);
  blip2::layer_norm_forward(thin, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, inp, w, b, 1e-5);
  return out(0, 0) == 0.0f ? 0 : 1;
}
