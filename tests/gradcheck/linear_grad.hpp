// Finite-difference checks for linear_backward (dinp, dweight, dbias; and frozen: dinp alone, with empty
// dweight and dbias) and for matmul's backward (two matmuls through transposed views, with a broadcast
// operand).
#pragma once
#include "blip2/nn/linear.hpp"
#include "blip2/nn/matmul.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_linear_grads(std::vector<grad_case>& cases) {
  struct shape {
    index_t B, T, K, N;  // inp (B, T, K)
    bool bias;
  };
  for (auto [B, T, K, N, bias] : {shape{1, 3, 5, 4, true}, shape{2, 3, 7, 5, true}, shape{1, 1, 5, 3, false}})
    for (bool frozen : {false, true}) {
      grad_case g;
      g.desc = describe("linear", {{"B", B}, {"T", T}, {"K", K}, {"N", N}},
                        std::string(bias ? "" : "no_bias") + (frozen ? (bias ? "frozen" : ",frozen") : ""));
      g.init = [B = B, T = T, K = K, N = N](io<double>& x) {
        rng r(B + 10 * T + 100 * K + 1000 * N);
        x.make("inp", {B, T, K}, r.normals());
        x.make("weight", {N, K}, r.normals());
        x.make("bias", {N}, r.normals());
        x.make("out", {B, T, N}, [](index_t) { return 0.0; });
      };
      g.wrt = frozen ? std::vector<std::string>{"inp"}
              : bias ? std::vector<std::string>{"inp", "weight", "bias"}
                     : std::vector<std::string>{"inp", "weight"};
      g.outputs = {"out"};
      g.forward = [bias = bias](reference_backend& be, io<double>& x) {
        if (bias)
          linear_forward(be, x.out<3>("out"), x.in<3>("inp"), x.in<2>("weight"), x.in<1>("bias"));
        else
          linear_forward(be, x.out<3>("out"), x.in<3>("inp"), x.in<2>("weight"));
      };
      g.backward = [bias = bias, frozen](reference_backend& be, io<double>& x) {
        // frozen: empty parameter-gradient views, only dinp
        auto dweight = frozen ? tensor_view<double, 2>{} : x.out<2>("dweight");
        auto dbias = frozen || !bias ? tensor_view<double, 1>{} : x.out<1>("dbias");
        if (bias)
          linear_backward(be, x.out<3>("dinp"), dweight, dbias, x.in<3>("dout"), x.in<3>("inp"), x.in<2>("weight"));
        else
          linear_backward(be, x.out<3>("dinp"), dweight, x.in<3>("dout"), x.in<3>("inp"), x.in<2>("weight"));
      };
      cases.push_back(std::move(g));
    }

  // C (P, M, N) = alpha * A (P, M, K) @ B (K, N), A stored transposed as (P, K, M), B shared by every
  // batch (batch stride 0). Backward, as a layer would write it:
  //   dA += alpha dC B^T            (one batched matmul, written through A's transposed view)
  //   dB += alpha sum_p A_p^T dC_p  (one rank-2 matmul per batch, beta 1)
  const index_t P = 3, M = 4, K = 5, N = 3;
  const double alpha = 0.7;
  grad_case g;
  g.desc = describe("matmul", {{"batch", P}, {"M", M}, {"K", K}, {"N", N}}, "A^T,B_stride0,alpha=0.7");
  g.init = [=](io<double>& x) {
    rng r(77);
    x.make("A", {P, K, M}, r.normals());
    x.make("B", {K, N}, r.normals());
    x.make("C", {P, M, N}, [](index_t) { return 0.0; });
  };
  auto a_view = [=](io<double>& x, const std::string& name) {  // (P, M, K) view of a (P, K, M) buffer
    return transpose(x.out<3>(name));
  };
  auto b_view = [=](io<double>& x, const std::string& name) {  // (P, K, N), batch stride 0
    return tensor_view<double, 3>(x.fbuf(name).data.data(), {P, K, N}, {0, N, 1});
  };
  g.wrt = {"A", "B"};
  g.outputs = {"C"};
  g.forward = [=](reference_backend& be, io<double>& x) {
    matmul(be, x.out<3>("C"), a_view(x, "A"), b_view(x, "B"), alpha);
  };
  g.backward = [=](reference_backend& be, io<double>& x) {
    auto dC = x.in<3>("dC");
    matmul(be, a_view(x, "dA"), dC, transpose(b_view(x, "B")), alpha, 1.0);
    for (index_t p = 0; p < P; ++p)
      matmul(be, x.out<2>("dB"), transpose(slice(a_view(x, "A"), p)), slice(dC, p), alpha, 1.0);
  };
  cases.push_back(std::move(g));
}

}  // namespace blip2::testing
