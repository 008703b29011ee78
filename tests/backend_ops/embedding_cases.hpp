// Conformance cases for embedding_forward / embedding_backward.
#pragma once
#include "blip2/nn/embedding.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_embedding_cases(std::vector<op_case>& cases) {
  // ids (N), or (B, T) with N = B T when B > 0; V table rows, C channels. N > V forces repeated ids (several
  // rows of dout scatter-added into one row of dtable); `hot` sends every other id to row 1 as well.
  struct shape { index_t B, N, V, C; bool hot; };
  for (const shape& s : {shape{0, 1, 5, 7, false}, shape{0, 13, 7, 5, false}, shape{0, 7, 13, 13, true},
                         shape{2, 14, 13, 5, false}, shape{0, 64, 50, 768, true}}) {
    const index_t B = s.B, N = s.N, V = s.V, C = s.C;
    const bool hot = s.hot;
    auto init_common = [=](io<double>& x) {
      rng r(N * 17 + V * 3 + C);
      x.make_ints("ids", {N}, [&](index_t n) { return hot && n % 2 == 0 ? index_t{1} : r.integer(0, V - 1); });
      if (B > 0) x.ibuf("ids").shape = {B, N / B};
    };
    auto init_forward = [=](io<double>& x) {
      init_common(x);
      rng r(V * 5 + C);
      x.make("table", {V, C}, r.normals());
      x.make("out", {N, C}, r.normals());  // pre-filled: every element must be written
      if (B > 0) x.fbuf("out").shape = {B, N / B, C};
    };
    auto forward = [=](auto& be, auto& x) {
      if (B > 0)
        embedding_forward(be, x.template out<3>("out"), x.template iin<2>("ids"), x.template in<2>("table"));
      else
        embedding_forward(be, x.template out<2>("out"), x.template iin<1>("ids"), x.template in<2>("table"));
    };
    std::initializer_list<std::pair<const char*, long long>> dims_bt = {{"B", B}, {"T", N / (B > 0 ? B : 1)},
                                                                       {"V", V}, {"C", C}};
    std::initializer_list<std::pair<const char*, long long>> dims_n = {{"N", N}, {"V", V}, {"C", C}};
    const auto& dims = B > 0 ? dims_bt : dims_n;
    const std::string extra = std::string(N > V || hot ? "repeats" : "");
    cases.push_back(
        make_case("embedding_forward", describe("embedding_forward", dims, extra), init_forward, {"out"}, forward));
    auto init_backward = [=](io<double>& x) {
      init_common(x);
      rng r(N * 7 + C);
      x.make("dout", {N, C}, r.normals());
      if (B > 0) x.fbuf("dout").shape = {B, N / B, C};
      x.make("dtable", {V, C}, r.normals());  // pre-filled: a parameter gradient accumulates
    };
    auto backward = [=](auto& be, auto& x) {
      if (B > 0)
        embedding_backward(be, x.template out<2>("dtable"), x.template in<3>("dout"), x.template iin<2>("ids"));
      else
        embedding_backward(be, x.template out<2>("dtable"), x.template in<2>("dout"), x.template iin<1>("ids"));
    };
    cases.push_back(make_case("embedding_backward", describe("embedding_backward", dims, extra), init_backward,
                              {"dtable"}, backward));
    // padding_idx: the id of the first position adds nothing anywhere (BERT's pad token)
    auto backward_pad = [=](auto& be, auto& x) {
      const index_t pad = x.ibuf("ids").data[0];
      if (B > 0)
        embedding_backward(be, x.template out<2>("dtable"), x.template in<3>("dout"), x.template iin<2>("ids"), pad);
      else
        embedding_backward(be, x.template out<2>("dtable"), x.template in<2>("dout"), x.template iin<1>("ids"), pad);
    };
    cases.push_back(make_case("embedding_backward",
                              describe("embedding_backward", dims, extra.empty() ? "padding_idx" : extra + ",padding_idx"),
                              init_backward, {"dtable"}, backward_pad));
  }
}

}  // namespace blip2::testing
