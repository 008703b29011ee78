// blip2/models/to_space.hpp: a model's copy in another memory space, made by a backend of that space:
//   auto gpu = blip2::to_space<blip2::cuda_space>(cuda, host_qformer);   // weights copied, gradients zero
//   auto vit = blip2::to_space<blip2::cuda_space>(cuda, host_vision_model);
// Checkpoints load on the host (io/); a device run copies the loaded model once. The copy has the same
// configuration and parameter order, so its views carry the same names.
// to_backend(be, std::move(host_model)) is what a program written for any backend calls: the model itself
// for a host backend, its copy in the backend's memory otherwise.
#pragma once
#include "blip2/models/qformer/model.hpp"
#include "blip2/models/vit/vision_transformer.hpp"
#include "blip2/nn/copy_from_host.hpp"

namespace blip2 {

template <memory_space Dst, backend Be, class T>
qformer_model<T, Dst> to_space(Be& be, const qformer_model<T, host_space>& m) {
  static_assert(std::is_same_v<typename Be::memory_space, Dst>, "to_space: the backend must work in the destination space");
  qformer_model<T, Dst> out(m.config());
  copy_from_host(be, out.parameter_view(), m.parameter_view());
  out.zero_grad(be);
  return out;
}

template <memory_space Dst, backend Be, class T>
vision_model<T, Dst> to_space(Be& be, const vision_model<T, host_space>& m) {
  static_assert(std::is_same_v<typename Be::memory_space, Dst>, "to_space: the backend must work in the destination space");
  vision_model<T, Dst> out(m.config(), m.storage());
  copy_from_host(be, out.parameter_view(), m.parameter_view());
  return out;
}

template <backend Be, class Model>
auto to_backend(Be& be, Model&& host_model) {
  using Space = typename Be::memory_space;
  if constexpr (Space::host_accessible)
    return std::remove_cvref_t<Model>(std::forward<Model>(host_model));
  else
    return to_space<Space>(be, host_model);
}

}  // namespace blip2
