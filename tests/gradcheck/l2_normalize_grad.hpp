// Finite-difference checks for l2_normalize_backward, in both branches.
#pragma once
#include "blip2/nn/l2_normalize.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_l2_normalize_grads(std::vector<grad_case>& cases) {
  // eps = 1e-12: every row takes the unclamped branch. eps = 0.5: row 1 is zero and row 3 is scaled to a
  // norm of about 0.2 (both clamped: out = inp / eps), the others have norms well above 0.5; a step of
  // h = 1e-5 never crosses the branch point. (With eps = 1e-12 the clamped branch could not be checked
  // by differences: any step h >> eps leaves it.)
  for (double eps : {1e-12, 0.5}) {
    grad_case g;
    const bool clamped = eps > 0.1;
    g.desc = describe("l2_normalize", {{"R", 5}, {"D", 7}}, clamped ? "eps=0.5,clamped_rows=2" : "eps=1e-12");
    g.init = [clamped](io<double>& x) {
      rng r(91);
      x.make("inp", {5, 7}, r.normals());
      if (clamped) {
        auto& v = x.fbuf("inp").data;
        double ss = 0;
        for (index_t d = 0; d < 7; ++d) ss += v[3 * 7 + d] * v[3 * 7 + d];
        for (index_t d = 0; d < 7; ++d) {
          v[1 * 7 + d] = 0.0;
          v[3 * 7 + d] *= 0.2 / std::sqrt(ss);
        }
      }
      x.make("out", {5, 7}, [](index_t) { return 0.0; });
      x.make("norm", {5}, [](index_t) { return 0.0; });
    };
    g.wrt = {"inp"};
    g.outputs = {"out"};
    g.forward = [eps](reference_backend& be, io<double>& x) {
      l2_normalize_forward(be, x.out<2>("out"), x.in<2>("inp"), l2_normalize_cache<double>{x.out<1>("norm")}, eps);
    };
    g.backward = [eps](reference_backend& be, io<double>& x) {
      l2_normalize_backward(be, x.out<2>("dinp"), x.in<2>("dout"), x.in<2>("inp"),
                            l2_normalize_cache<double>{x.out<1>("norm")}, eps);
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing
