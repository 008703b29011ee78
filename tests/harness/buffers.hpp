// tests/harness/buffers.hpp: named test buffers with guard elements, shared by the conformance harness
// (backend_ops.hpp) and the finite-difference checks (gradcheck.hpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "blip2/core/tensor_view.hpp"

namespace blip2::testing {

inline constexpr index_t guard_elems = 16;

// A buffer of n elements followed by guard_elems sentinel values that no kernel may touch.
template <class T>
struct buffer {
  std::vector<index_t> shape;
  std::vector<T> data;  // size() + guard_elems

  index_t size() const {
    index_t n = 1;
    for (auto e : shape) n *= e;
    return n;
  }
  static T sentinel() {
    if constexpr (std::is_floating_point_v<T>) return static_cast<T>(-7.0e30);
    else return static_cast<T>(-7777777);
  }
  void allocate(std::vector<index_t> s) {
    shape = std::move(s);
    data.assign(static_cast<std::size_t>(size() + guard_elems), sentinel());
  }
  bool guard_intact() const {
    const T s = sentinel();
    for (index_t i = size(); i < size() + guard_elems; ++i)
      if (std::memcmp(&data[i], &s, sizeof(T)) != 0) return false;
    return true;
  }
  template <std::size_t R>
  tensor_view<T, R> view() {
    if (shape.size() != R) throw std::logic_error("test buffer: rank mismatch");
    extents_t<R> e{};
    for (std::size_t i = 0; i < R; ++i) e[i] = shape[i];
    return {data.data(), e};
  }
};

// Named floating-point buffers (T) and integer buffers (ids, targets, argmax).
template <class T>
struct io {
  using scalar = T;
  using space = host_space;  // where the views of out(), in(), at() and own() point (device_io.hpp: cuda)
  std::map<std::string, buffer<T>> f;
  std::map<std::string, buffer<index_t>> i;

  buffer<T>& fbuf(const std::string& name) {
    auto it = f.find(name);
    if (it == f.end()) throw std::logic_error("test io: no float buffer '" + name + "'");
    return it->second;
  }
  buffer<index_t>& ibuf(const std::string& name) {
    auto it = i.find(name);
    if (it == i.end()) throw std::logic_error("test io: no integer buffer '" + name + "'");
    return it->second;
  }
  // A writable view of a float buffer, and a read-only one.
  template <std::size_t R>
  tensor_view<T, R> out(const std::string& name) { return fbuf(name).template view<R>(); }
  template <std::size_t R>
  tensor_view<const T, R> in(const std::string& name) { return fbuf(name).template view<R>(); }
  template <std::size_t R>
  tensor_view<index_t, R> iout(const std::string& name) { return ibuf(name).template view<R>(); }
  template <std::size_t R>
  tensor_view<const index_t, R> iin(const std::string& name) { return ibuf(name).template view<R>(); }

  // A view with explicit extents and strides over a named buffer from element `offset` (transposes,
  // slices, broadcasts, column blocks of one buffer).
  template <std::size_t R>
  tensor_view<T, R> at(const std::string& name, extents_t<R> e, extents_t<R> s, index_t offset = 0) {
    return {fbuf(name).data.data() + offset, e, s};
  }
  // The host side of a copy between the host and a backend's memory: here the same as out() and in();
  // device_io.hpp hands out its host buffers instead of device mirrors.
  template <std::size_t R>
  tensor_view<T, R> host_out(const std::string& name) { return out<R>(name); }
  template <std::size_t R>
  tensor_view<const T, R> host_in(const std::string& name) { return in<R>(name); }
  // A read-only view of storage the case made itself (a bfloat16 weight).
  template <class U, std::size_t R>
  tensor_view<const U, R> own(const std::vector<U>& v, extents_t<R> e, extents_t<R> s, index_t offset = 0) {
    return {v.data() + offset, e, s};
  }

  // Create a buffer filled by gen(i) for every element.
  template <class Gen>
  buffer<T>& make(const std::string& name, std::vector<index_t> shape, Gen&& gen) {
    auto& b = f[name];
    b.allocate(std::move(shape));
    for (index_t k = 0; k < b.size(); ++k) b.data[k] = static_cast<T>(gen(k));
    return b;
  }
  template <class Gen>
  buffer<index_t>& make_ints(const std::string& name, std::vector<index_t> shape, Gen&& gen) {
    auto& b = i[name];
    b.allocate(std::move(shape));
    for (index_t k = 0; k < b.size(); ++k) b.data[k] = static_cast<index_t>(gen(k));
    return b;
  }
};

// The same buffers in another precision (guards re-laid, values rounded).
template <class To, class From>
io<To> convert(const io<From>& src) {
  io<To> dst;
  for (const auto& [name, b] : src.f) {
    auto& d = dst.f[name];
    d.allocate(b.shape);
    for (index_t k = 0; k < b.size(); ++k) d.data[k] = static_cast<To>(b.data[k]);
  }
  dst.i = src.i;
  return dst;
}

// "name(a=1,b=2)" for case descriptions.
inline std::string describe(const std::string& name, std::initializer_list<std::pair<const char*, long long>> args,
                            const std::string& extra = "") {
  std::string s = name + "(";
  bool first = true;
  for (const auto& [k, v] : args) {
    s += (first ? "" : ",") + std::string(k) + "=" + std::to_string(v);
    first = false;
  }
  if (!extra.empty()) s += (first ? "" : ",") + extra;
  return s + ")";
}

// The substring filter: BLIP2_OPS_FILTER="layer_norm" runs only cases whose description (or backend
// name) contains it.
inline bool selected(const std::string& text) {
  const char* f = std::getenv("BLIP2_OPS_FILTER");
  return f == nullptr || *f == '\0' || text.find(f) != std::string::npos;
}

// Seeded generators for inputs.
struct rng {
  std::mt19937_64 gen;
  explicit rng(std::uint64_t seed) : gen(seed) {}
  double normal(double sd = 1.0) { return std::normal_distribution<double>(0.0, sd)(gen); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen); }
  index_t integer(index_t lo, index_t hi) { return std::uniform_int_distribution<index_t>(lo, hi)(gen); }
  auto normals(double sd = 1.0) {
    return [this, sd](index_t) { return normal(sd); };
  }
};

}  // namespace blip2::testing
