// tests/harness/device_io.hpp: the conformance cases' buffers mirrored in CUDA device memory.
//
// device_io has io<float>'s interface (scalar, space, out, in, iout, iin, at, own, host_out, host_in, fbuf), so a case's
// run(be, x) lambda compiles unchanged for the CUDA backend: the views it hands out point into device
// copies of the host buffers, guard elements included. download() brings every buffer back, so the host
// comparison (and the guard check) sees what the kernels wrote. fbuf() gives the host buffer, for cases
// that read their inputs' values on the host (the bfloat16 weight).
#pragma once
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "blip2/backend/cuda/cuda.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "harness/buffers.hpp"

namespace blip2::testing {

struct device_io {
  using scalar = float;
  using space = cuda_space;

  device_io(cuda_backend& be, io<float>& host) : be_(be), host_(host) {
    for (auto& [name, b] : host_.f) upload(f_[name], b);
    for (auto& [name, b] : host_.i) upload(i_[name], b);
  }

  // Every buffer back to the host (guards included), but those handed out by host_out: the kernels wrote
  // those on the host.
  void download() {
    for (auto& [name, b] : host_.f)
      if (!host_side_.count(name)) fetch(f_.at(name), b);
    for (auto& [name, b] : host_.i) fetch(i_.at(name), b);
  }

  buffer<float>& fbuf(const std::string& name) { return host_.fbuf(name); }
  buffer<index_t>& ibuf(const std::string& name) { return host_.ibuf(name); }

  template <std::size_t R>
  tensor_view<float, R, cuda_space> out(const std::string& name) {
    return device_view<R>(f_.at(name).data(), host_.fbuf(name));
  }
  template <std::size_t R>
  tensor_view<const float, R, cuda_space> in(const std::string& name) {
    return out<R>(name);
  }
  template <std::size_t R>
  tensor_view<index_t, R, cuda_space> iout(const std::string& name) {
    return device_view<R>(i_.at(name).data(), host_.ibuf(name));
  }
  template <std::size_t R>
  tensor_view<const index_t, R, cuda_space> iin(const std::string& name) {
    return iout<R>(name);
  }
  // The host side of copy_to_host / copy_from_host: the host buffer itself.
  template <std::size_t R>
  tensor_view<float, R> host_out(const std::string& name) {
    host_side_.insert(name);
    return host_.fbuf(name).template view<R>();
  }
  template <std::size_t R>
  tensor_view<const float, R> host_in(const std::string& name) {
    return host_.fbuf(name).template view<R>();
  }
  template <std::size_t R>
  tensor_view<float, R, cuda_space> at(const std::string& name, extents_t<R> e, extents_t<R> s, index_t offset = 0) {
    host_.fbuf(name);  // a clear error for a wrong name
    return {f_.at(name).data() + offset, e, s};
  }
  // The case's own storage, copied to the device and kept until this io is destroyed.
  template <class U, std::size_t R>
  tensor_view<const U, R, cuda_space> own(const std::vector<U>& v, extents_t<R> e, extents_t<R> s, index_t offset = 0) {
    auto dev = std::make_shared<blip2::buffer<U, cuda_space>>();
    dev->reserve_elements(v.size());
    const auto n = static_cast<index_t>(v.size());
    copy_from_host(be_, tensor_view<U, 1, cuda_space>(dev->data(), {n}), tensor_view<const U, 1>(v.data(), {n}));
    owned_.push_back(dev);
    return {dev->data() + offset, e, s};
  }

 private:
  template <class T>
  void upload(blip2::buffer<T, cuda_space>& dev, buffer<T>& b) {
    const auto n = static_cast<index_t>(b.data.size());
    dev.reserve_elements(b.data.size());
    copy_from_host(be_, tensor_view<T, 1, cuda_space>(dev.data(), {n}), tensor_view<const T, 1>(b.data.data(), {n}));
  }
  template <class T>
  void fetch(blip2::buffer<T, cuda_space>& dev, buffer<T>& b) {
    const auto n = static_cast<index_t>(b.data.size());
    copy_to_host(be_, tensor_view<T, 1>(b.data.data(), {n}), tensor_view<const T, 1, cuda_space>(dev.data(), {n}));
  }
  template <std::size_t R, class T, class B>
  static tensor_view<T, R, cuda_space> device_view(T* p, const B& b) {
    if (b.shape.size() != R) throw std::logic_error("device io: rank mismatch");
    extents_t<R> e{};
    for (std::size_t k = 0; k < R; ++k) e[k] = b.shape[k];
    return {p, e};
  }

  cuda_backend& be_;
  io<float>& host_;
  std::map<std::string, blip2::buffer<float, cuda_space>> f_;
  std::map<std::string, blip2::buffer<index_t, cuda_space>> i_;
  std::vector<std::shared_ptr<void>> owned_;
  std::set<std::string> host_side_;  // buffers written on the host (download leaves them)
};

}  // namespace blip2::testing
