// Conformance cases for axpy, copy, fill and the host copies (copy_to_host, copy_from_host).
#pragma once
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/nn/fill.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_elementwise_cases(std::vector<op_case>& cases) {
  for (auto [R, C] : {std::pair<index_t, index_t>{1, 1}, {5, 7}, {13, 5}}) {
    auto init = [R = R, C = C](io<double>& x) {
      rng r(R * 31 + C);
      x.make("x", {R, C}, r.normals());
      x.make("y", {R, C}, r.normals());  // read and written
    };
    cases.push_back(make_case("axpy", describe("axpy", {{"R", R}, {"C", C}}, "alpha=-0.5"), init, {"y"},
                              [](auto& be, auto& x) { axpy(be, x.template out<2>("y"), x.template in<2>("x"), -0.5); }));
  }
  // (B, T, C) -> (T, B, C) and back: the layout change of the Q-Former's sequence-major activations; the
  // host copies the same way, their host side through host_out / host_in (on a host backend both sides
  // are host views; on a device the other side is in the backend's memory)
  auto copy_op = [](auto& be, auto& x) {
    copy(be, transpose(x.template out<3>("dst"), 0, 1), x.template in<3>("src"));  // (T, B, C) seen as (B, T, C)
  };
  auto to_host_op = [](auto& be, auto& x) {
    copy_to_host(be, transpose(x.template host_out<3>("dst"), 0, 1), x.template in<3>("src"));
  };
  auto from_host_op = [](auto& be, auto& x) {
    copy_from_host(be, transpose(x.template out<3>("dst"), 0, 1), x.template host_in<3>("src"));
  };
  auto add_copy_cases = [&](const std::string& op, auto run) {
    for (auto [B, T, C] : {std::tuple<index_t, index_t, index_t>{1, 1, 3}, {3, 5, 7}}) {
      auto init = [B = B, T = T, C = C](io<double>& x) {
        rng r(B * 7 + T);
        x.make("src", {B, T, C}, r.normals());
        x.make("dst", {T, B, C}, [](index_t) { return 0.0; });
      };
      cases.push_back(make_case(op, describe(op, {{"B", B}, {"T", T}, {"C", C}}, "transpose01"), init, {"dst"}, run));
    }
  };
  add_copy_cases("copy", copy_op);
  add_copy_cases("copy_to_host", to_host_op);
  add_copy_cases("copy_from_host", from_host_op);
  // fill: a vector, a dense (B, T, C) large enough that the oneDNN backend splits it over threads, and
  // every other column of a (R, 2C) buffer (a strided view: the columns between must keep their values)
  for (auto [B, T, C] : {std::tuple<index_t, index_t, index_t>{1, 1, 1}, {1, 1, 13}, {5, 7, 1000}}) {
    auto init = [B = B, T = T, C = C](io<double>& x) {
      rng r(B * 5 + C);
      x.make("dst", {B, T, C}, r.normals());
    };
    cases.push_back(make_case("fill", describe("fill", {{"B", B}, {"T", T}, {"C", C}}, "value=-0.25"), init, {"dst"},
                              [](auto& be, auto& x) { fill(be, x.template out<3>("dst"), -0.25); }));
  }
  for (auto [R, C] : {std::pair<index_t, index_t>{1, 1}, {7, 5}}) {
    auto init = [R = R, C = C](io<double>& x) {
      rng r(R * 3 + C);
      x.make("dst", {R, 2 * C}, r.normals());
    };
    cases.push_back(make_case("fill", describe("fill", {{"R", R}, {"C", C}}, "every other column,value=3"), init,
                              {"dst"}, [](auto& be, auto& x) {
                                auto d = x.template out<2>("dst");  // (R, 2C)
                                fill(be, x.template at<2>("dst", {d.extent(0), d.extent(1) / 2}, {d.extent(1), 2}),
                                     3);  // (R, C), int converted to T
                              }));
  }
}

}  // namespace blip2::testing
