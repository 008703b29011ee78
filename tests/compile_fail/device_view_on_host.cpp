// compile_fail_device_view_on_host: a view of device (cuda_space) memory passed to an op on a host
// backend (the reference one) must not compile: the memory space is part of the view's type.
// Expected diagnostic: "memory space".
#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/nn/layer_norm.hpp"

int main() {
  blip2::reference_backend be;
  float* device_buffer = nullptr;  // would come from cudaMalloc
  blip2::tensor_view<float, 2, blip2::cuda_space> out(device_buffer, {2, 4});
  blip2::host_tensor<float, 2> inp({2, 4});
  blip2::host_tensor<float, 1> w({4}), b({4}), mean({2}), rstd({2});
  blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, inp, w, b, 1e-5);
}
