// Conformance cases for matmul, linear_forward and linear_backward.
#pragma once
#include <iterator>
#include <limits>
#include <vector>

#include "blip2/nn/linear.hpp"
#include "blip2/nn/matmul.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

namespace linear_cases_detail {

// A view with explicit extents and strides over a named buffer (transposes, slices, broadcasts).
template <std::size_t R, class IO>
auto strided(IO& x, const std::string& name, extents_t<R> e, extents_t<R> s) {
  return x.template at<R>(name, e, s);
}

inline constexpr double nan = std::numeric_limits<double>::quiet_NaN();

}  // namespace linear_cases_detail

inline void add_matmul_cases(std::vector<op_case>& cases) {
  using linear_cases_detail::strided;
  // Each layout stores A and B in buffers and says how to view them as (batch, M, K) and (batch, K, N).
  enum class layout { plain, transposed, broadcast, padded_rows, strided_k, repeated_row, rank2 };
  struct mm_case {
    layout lay;
    index_t batch, M, K, N;
    double alpha, beta;
    const char* what;
  };
  for (const auto& mc : {mm_case{layout::plain, 3, 5, 7, 13, 1.0, 0.0, "plain,C=NaN"},
                         mm_case{layout::plain, 1, 1, 13, 1, 1.0, 1.0, "plain"},
                         mm_case{layout::transposed, 3, 7, 5, 13, 0.5, 0.7, "A^T,B^T"},
                         mm_case{layout::broadcast, 4, 5, 13, 7, 1.0, 1.0, "A_batch=1,B_stride0"},
                         mm_case{layout::padded_rows, 2, 13, 7, 5, -2.0, 0.0, "row_stride=K+3"},
                         mm_case{layout::strided_k, 2, 5, 7, 13, 1.0, 0.0, "k_stride=2"},
                         mm_case{layout::repeated_row, 2, 5, 7, 13, 1.0, 0.0, "A_row_stride0"},
                         mm_case{layout::rank2, 1, 13, 5, 7, 0.25, 1.0, "rank2"}}) {
    const index_t P = mc.batch, M = mc.M, K = mc.K, N = mc.N;
    auto init = [mc, P, M, K, N](io<double>& x) {
      rng r(P * 1000 + M * 100 + K * 10 + N + static_cast<int>(mc.lay));
      const index_t a_size = mc.lay == layout::padded_rows ? P * M * (K + 3)
                             : mc.lay == layout::strided_k ? P * M * K * 2
                             : mc.lay == layout::broadcast ? M * K
                                                           : P * M * K;
      x.make("A", {a_size}, r.normals());
      x.make("B", {mc.lay == layout::broadcast ? K * N : P * K * N}, r.normals());
      if (mc.beta == 0.0)
        x.make("C", {P, M, N}, [](index_t) { return linear_cases_detail::nan; });  // beta 0 must not read C
      else
        x.make("C", {P, M, N}, r.normals());
    };
    auto run = [mc, P, M, K, N](auto& be, auto& x) {
      auto c = x.template out<3>("C");  // (batch, M, N)
      switch (mc.lay) {
        case layout::plain:
          matmul(be, c, strided<3>(x, "A", {P, M, K}, {M * K, K, 1}), strided<3>(x, "B", {P, K, N}, {K * N, N, 1}),
                 mc.alpha, mc.beta);
          break;
        case layout::transposed:  // A stored (batch, K, M), B stored (batch, N, K)
          matmul(be, c, transpose(strided<3>(x, "A", {P, K, M}, {M * K, M, 1})),
                 transpose(strided<3>(x, "B", {P, N, K}, {K * N, K, 1})), mc.alpha, mc.beta);
          break;
        case layout::broadcast:  // A has batch extent 1, B a batch stride of 0
          matmul(be, c, strided<3>(x, "A", {1, M, K}, {M * K, K, 1}), strided<3>(x, "B", {P, K, N}, {0, N, 1}),
                 mc.alpha, mc.beta);
          break;
        case layout::padded_rows:  // rows of A are K + 3 apart (a column block of a wider matrix)
          matmul(be, c, strided<3>(x, "A", {P, M, K}, {M * (K + 3), K + 3, 1}),
                 strided<3>(x, "B", {P, K, N}, {K * N, N, 1}), mc.alpha, mc.beta);
          break;
        case layout::strided_k:  // every other element along K: no unit stride in A
          matmul(be, c, strided<3>(x, "A", {P, M, K}, {2 * M * K, 2 * K, 2}),
                 strided<3>(x, "B", {P, K, N}, {K * N, N, 1}), mc.alpha, mc.beta);
          break;
        case layout::repeated_row:  // one row of A repeated M times (stride 0 inside the matrix)
          matmul(be, c, strided<3>(x, "A", {P, M, K}, {M * K, 0, 1}), strided<3>(x, "B", {P, K, N}, {K * N, N, 1}),
                 mc.alpha, mc.beta);
          break;
        case layout::rank2:
          matmul(be, strided<2>(x, "C", {M, N}, {N, 1}), strided<2>(x, "A", {M, K}, {K, 1}),
                 strided<2>(x, "B", {K, N}, {N, 1}), mc.alpha, mc.beta);
          break;
      }
    };
    const std::string extra = std::string(mc.what) + ",alpha=" + std::to_string(mc.alpha).substr(0, 5) +
                              ",beta=" + std::to_string(mc.beta).substr(0, 3);
    cases.push_back(make_case("matmul", describe("matmul", {{"batch", P}, {"M", M}, {"K", K}, {"N", N}}, extra), init,
                              {"C"}, run));
  }
}

inline void add_linear_cases(std::vector<op_case>& cases) {
  add_matmul_cases(cases);
  struct shape {
    index_t B, T, K, N;  // inp (B, T, K) flattened to R = B T rows
    bool bias;
    bool forward_only = false;
  };
  // Decode shapes, forward only: R = 1..8 rows with N K >= 2^20 weights take the oneDNN backend's
  // streaming kernel (linear.hpp's use_stream_kernel); K with tails after whole vectors of 16 and 8
  // (K = 1040 has none), N not a multiple of the tile (1-6 rows) or the OpenMP block (30-32 rows). R = 9
  // at the same size stays on the matmul (the rule's edge).
  const shape decode[] = {{1, 1, 1029, 1031, true, true}, {1, 2, 1040, 1013, false, true},
                          {1, 3, 2055, 517, true, true},  {2, 2, 1031, 1023, true, true},
                          {1, 5, 2561, 411, true, true},  {2, 3, 1027, 1025, false, true},
                          {1, 7, 4103, 257, true, true},  {2, 4, 1033, 1019, true, true},
                          {3, 3, 1033, 1019, true, true}};
  std::vector<shape> shapes = {shape{1, 5, 7, 13, true}, shape{2, 7, 13, 5, true}, shape{1, 1, 13, 7, false},
                               shape{2, 16, 96, 64, true}, shape{1, 13, 5, 1, false}};
  shapes.insert(shapes.end(), std::begin(decode), std::end(decode));
  for (auto [B, T, K, N, bias, forward_only] : shapes) {
    auto init_inputs = [B = B, T = T, K = K, N = N](io<double>& x) {
      rng r(B * 1000 + T * 100 + K * 10 + N);
      x.make("inp", {B, T, K}, r.normals());
      x.make("weight", {N, K}, r.normals(0.3));
      x.make("bias", {N}, r.normals());
      x.make("out", {B, T, N}, [](index_t) { return linear_cases_detail::nan; });  // assigned: never read
    };
    auto forward = [bias = bias](auto& be, auto& x) {
      if (bias)
        linear_forward(be, x.template out<3>("out"), x.template in<3>("inp"), x.template in<2>("weight"),
                       x.template in<1>("bias"));
      else
        linear_forward(be, x.template out<3>("out"), x.template in<3>("inp"), x.template in<2>("weight"));
    };
    const std::string nb = bias ? "" : "no_bias";
    const auto dims = {std::pair<const char*, long long>{"B", B}, {"T", T}, {"K", K}, {"N", N}};
    cases.push_back(make_case("linear_forward", describe("linear_forward", dims, nb), init_inputs, {"out"}, forward));
    if (forward_only) continue;
    // which gradients are asked for: all; no dinp (the first shape); frozen (no dweight, no dbias: every
    // shape, both modes); no dweight but a dbias (the first two shapes)
    enum class wanted { all, no_dinp, frozen, no_dweight };
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      for (wanted w : {wanted::all, wanted::no_dinp, wanted::frozen, wanted::no_dweight}) {
        const bool first = B == 1 && T == 5, second = B == 2 && T == 7;
        if (w == wanted::no_dinp && (!first || mode != grad_write::assign)) continue;
        if (w == wanted::no_dweight && (!(first || second) || !bias || mode != grad_write::assign)) continue;
        const bool skip_dinp = w == wanted::no_dinp, skip_dweight = w == wanted::frozen || w == wanted::no_dweight,
                   skip_dbias = w == wanted::frozen;
        auto init = [init_inputs, mode, skip_dinp, B = B, T = T, K = K, N = N](io<double>& x) {
          init_inputs(x);
          rng r(B * 7 + T * 5 + K * 3 + N);
          x.make("dout", {B, T, N}, r.normals());
          // assign must not read dinp (NaN); "not needed" must not touch it (zeros stay zeros)
          x.make("dinp", {B, T, K}, [&](index_t) {
            return skip_dinp ? 0.0 : mode == grad_write::accumulate ? r.normal() : linear_cases_detail::nan;
          });
          x.make("dweight", {N, K}, r.normals());  // pre-filled: parameter gradients accumulate
          x.make("dbias", {N}, r.normals());
        };
        auto backward = [mode, bias = bias, skip_dinp, skip_dweight, skip_dbias](auto& be, auto& x) {
          auto dinp = skip_dinp ? decltype(x.template out<3>("dinp")){} : x.template out<3>("dinp");
          auto dweight = skip_dweight ? decltype(x.template out<2>("dweight")){} : x.template out<2>("dweight");
          auto dbias = skip_dbias ? decltype(x.template out<1>("dbias")){} : x.template out<1>("dbias");
          if (bias)
            linear_backward(be, dinp, dweight, dbias, x.template in<3>("dout"), x.template in<3>("inp"),
                            x.template in<2>("weight"), mode);
          else
            linear_backward(be, dinp, dweight, x.template in<3>("dout"), x.template in<3>("inp"),
                            x.template in<2>("weight"), mode);
        };
        std::string extra = std::string(mode == grad_write::accumulate ? "accumulate" : "assign") +
                            (bias ? "" : ",no_bias") + (skip_dinp ? ",no_dinp" : "") +
                            (w == wanted::frozen ? ",frozen" : "") + (w == wanted::no_dweight ? ",no_dweight" : "");
        // the gradients not asked for are compared too: they must keep their pre-filled values
        std::vector<std::string> outputs = {"dinp", "dweight"};
        if (bias) outputs.push_back("dbias");
        cases.push_back(make_case("linear_backward", describe("linear_backward", dims, extra), init, outputs,
                                  backward));
      }
    }
  }
}

}  // namespace blip2::testing
