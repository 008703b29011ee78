// tests/harness/on_backend.hpp: test data moved into a backend's memory and back (nn/transfer.hpp), so one
// test body runs on host backends and on the CUDA backend alike. On a host backend every call is a copy.
//   testing::on_backend<Be> d(be);
//   auto m = d.model(load_qformer<float>(dir));           // the model in the backend's memory
//   auto x = d.copy_of(host_view);                        // a copy of host data, alive as long as d
//   auto y = d.template zeros<float, 2>({R, C});          // zero-filled storage, alive as long as d
//   std::vector<float> h = d.host(y);                     // a dense host copy (row-major)
#pragma once
#include <memory>
#include <vector>

#include "blip2/models/to_space.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/transfer.hpp"

namespace blip2::testing {

template <class Be>
struct on_backend {
  using space = typename Be::memory_space;
  Be& be;
  std::vector<std::shared_ptr<void>> keep;

  explicit on_backend(Be& b) : be(b) {}

  template <class M>
  auto model(M&& m) {
    return to_backend(be, std::forward<M>(m));
  }
  template <class T, std::size_t R>
  tensor_view<T, R, space> zeros(const extents_t<R>& e) {
    auto t = std::make_shared<space_tensor<T, R, space>>(e);
    keep.push_back(t);
    fill(be, t->view(), T{});
    return t->view();
  }
  template <class T, std::size_t R>
  tensor_view<T, R, space> copy_of(tensor_view<const T, R> host) {
    auto t = std::make_shared<space_tensor<T, R, space>>(to_backend_memory(be, host));
    keep.push_back(t);
    return t->view();
  }
  template <class T, std::size_t R>
  std::vector<std::remove_const_t<T>> host(tensor_view<T, R, space> v) {
    const auto h = to_host(be, v);
    return std::vector<std::remove_const_t<T>>(h.data(), h.data() + h.size());
  }
};

}  // namespace blip2::testing
