// Finite-difference checks for embedding_backward (with respect to the table; ids repeat).
#pragma once
#include <tuple>

#include "blip2/nn/embedding.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_embedding_grads(std::vector<grad_case>& cases) {
  // ids (N) = (9) over V = 5 rows, and ids (B, T) = (2, 3) over V = 4 rows
  for (auto [B, T, V] : {std::tuple<index_t, index_t, index_t>{0, 9, 5}, {2, 3, 4}}) {
    constexpr index_t C = 4;
    grad_case g;
    g.desc = B > 0 ? describe("embedding", {{"B", B}, {"T", T}, {"V", V}, {"C", C}}, "repeats")
                   : describe("embedding", {{"N", T}, {"V", V}, {"C", C}}, "repeats");
    g.init = [B = B, T = T, V = V](io<double>& x) {
      rng r(B * 100 + T * 10 + V);
      const index_t N = B > 0 ? B * T : T;
      x.make_ints("ids", {N}, [&](index_t n) { return n % 3 == 0 ? index_t{1} : r.integer(0, V - 1); });
      x.make("table", {V, C}, r.normals());
      x.make("out", {N, C}, [](index_t) { return 0.0; });
      if (B > 0) {
        x.ibuf("ids").shape = {B, T};
        x.fbuf("out").shape = {B, T, C};
      }
    };
    g.wrt = {"table"};
    g.outputs = {"out"};
    g.forward = [B = B](reference_backend& be, io<double>& x) {
      if (B > 0)
        embedding_forward(be, x.out<3>("out"), x.iin<2>("ids"), x.in<2>("table"));
      else
        embedding_forward(be, x.out<2>("out"), x.iin<1>("ids"), x.in<2>("table"));
    };
    g.backward = [B = B](reference_backend& be, io<double>& x) {
      if (B > 0)
        embedding_backward(be, x.out<2>("dtable"), x.in<3>("dout"), x.iin<2>("ids"));
      else
        embedding_backward(be, x.out<2>("dtable"), x.in<2>("dout"), x.iin<1>("ids"));
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing
