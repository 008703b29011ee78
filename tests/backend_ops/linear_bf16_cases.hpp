// Conformance cases for linear_bf16_forward (a bfloat16 weight, float or double everything else).
//
// The weight's values are drawn in double and rounded to bfloat16 in init, so the oracle (the reference
// backend in double) and every float32 backend multiply by the same weights; the bfloat16 buffer itself is
// made from them in each run. What remains is float32 summation against double over K <= 1029 terms:
// the default tolerance (NMSE 1e-9, harness/backend_ops.hpp) applies, with room to spare (~1e-12 seen).
// Shapes: M = 1..9 (a decode step's rows: 1, 5 beams; 9 takes two groups of 8 in the vector kernels),
// N not a multiple of the vector kernels' tile (1-6 rows) or OpenMP block (30-32 rows), K odd, below one
// vector, and with a tail after whole vectors of 8 and 16; views: padded, reversed and repeated rows, a
// non-unit column stride in inp (copied densely first) and in the weight (the reference loop), a NaN and
// an infinity among the weights, K = 0.
#pragma once
#include <limits>
#include <vector>

#include "blip2/core/bfloat16.hpp"
#include "blip2/nn/linear_bf16.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_linear_bf16_cases(std::vector<op_case>& cases) {
  // How inp, weight and out are stored and viewed (w_rows: the weight buffer's row length).
  enum class layout { plain, out_padded, inp_strided_k, inp_repeated_row, w_padded, w_reversed, w_strided_k, nonfinite };
  struct bf16_case {
    index_t M, K, N;
    bool bias;
    layout lay;
    const char* what;
  };
  std::vector<bf16_case> all;
  // M = 1..9, each with another K and N
  const index_t Ks[] = {7, 16, 17, 33, 79, 129, 255, 513, 1029}, Ns[] = {37, 1, 70, 5, 67, 33, 131, 13, 29};
  for (index_t M = 1; M <= 9; ++M)
    all.push_back({M, Ks[M - 1], Ns[M - 1], M % 3 != 0, layout::plain, ""});
  all.push_back({5, 1, 9, true, layout::plain, ""});
  all.push_back({2, 0, 5, true, layout::plain, ""});
  all.push_back({5, 45, 38, true, layout::out_padded, "out_row_stride=N+3"});
  all.push_back({5, 45, 38, true, layout::inp_strided_k, "inp_k_stride=2"});
  all.push_back({3, 47, 11, false, layout::inp_repeated_row, "inp_row_stride=0"});
  all.push_back({5, 45, 38, true, layout::w_padded, "w_row_stride=K+5"});
  all.push_back({9, 45, 38, true, layout::w_reversed, "w_row_stride=-K"});
  all.push_back({4, 45, 38, true, layout::w_strided_k, "w_k_stride=2"});
  all.push_back({5, 45, 38, true, layout::nonfinite, "w_NaN,w_Inf"});

  for (const bf16_case& c : all) {
    const index_t M = c.M, K = c.K, N = c.N;
    const layout lay = c.lay;
    const index_t w_row = lay == layout::w_padded ? K + 5 : lay == layout::w_strided_k ? 2 * K : K;
    const index_t inp_row = lay == layout::inp_strided_k ? 2 * K : K, out_row = lay == layout::out_padded ? N + 3 : N;
    auto init = [=](io<double>& x) {
      rng r(M * 1000 + K * 10 + N + static_cast<int>(lay));
      x.make("inp", {lay == layout::inp_repeated_row ? K : M * inp_row}, r.normals());
      x.make("weight", {N * w_row}, [&](index_t) { return round_to_bf16(static_cast<float>(r.normal(0.3))); });
      if (lay == layout::nonfinite) {
        x.fbuf("weight").data[3 * w_row + 2] = std::numeric_limits<double>::quiet_NaN();
        x.fbuf("weight").data[5 * w_row + 1] = std::numeric_limits<double>::infinity();
      }
      x.make("bias", {N}, r.normals());
      x.make("out", {M * out_row}, [](index_t) { return std::numeric_limits<double>::quiet_NaN(); });  // assigned
    };
    auto run = [=](auto& be, auto& x) {
      // the weight as bfloat16 storage (its values are bfloat16 already: exact)
      const auto& wf = x.fbuf("weight");
      std::vector<bfloat16> w(wf.data.size());
      for (std::size_t i = 0; i < w.size(); ++i) w[i] = to_bfloat16(static_cast<float>(wf.data[i]));
      auto weight = x.template own<bfloat16, 2>(w, {N, K}, {w_row, 1});
      if (lay == layout::w_strided_k) weight = x.template own<bfloat16, 2>(w, {N, K}, {w_row, 2});
      if (lay == layout::w_reversed) weight = x.template own<bfloat16, 2>(w, {N, K}, {-K, 1}, (N - 1) * K);
      auto inp = detail::as_const(x.template at<2>("inp", {M, K}, {inp_row, 1}));
      if (lay == layout::inp_strided_k) inp = detail::as_const(x.template at<2>("inp", {M, K}, {inp_row, 2}));
      if (lay == layout::inp_repeated_row) inp = detail::as_const(x.template at<2>("inp", {M, K}, {0, 1}));
      auto out = x.template at<2>("out", {M, N}, {out_row, 1});
      if (c.bias)
        linear_bf16_forward(be, out, inp, weight, x.template in<1>("bias"));
      else
        linear_bf16_forward(be, out, inp, weight);
    };
    std::string extra = std::string(c.what) + (c.bias ? "" : (*c.what ? ",no_bias" : "no_bias"));
    cases.push_back(make_case("linear_bf16_forward", describe("linear_bf16_forward", {{"M", M}, {"K", K}, {"N", N}}, extra),
                              init, {"out"}, run));
  }
}

}  // namespace blip2::testing
