// Finite-difference checks for cross_entropy_backward (with respect to the logits). (A case computed by
// hand is in test_ops_by_hand.cpp.)
#pragma once
#include "blip2/loss/cross_entropy.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_cross_entropy_grads(std::vector<grad_case>& cases) {
  struct shape { index_t R, V; double smoothing; index_t ignored_row; };
  for (const shape& s : {shape{5, 7, 0.1, 2}, shape{3, 4, 0.0, -1}}) {
    grad_case g;
    const index_t R = s.R, V = s.V, ignored_row = s.ignored_row;
    const double smoothing = s.smoothing;
    g.desc = describe("cross_entropy", {{"R", R}, {"V", V}},
                      std::string(smoothing > 0 ? "smoothing=0.1" : "smoothing=0") +
                          (ignored_row >= 0 ? ",ignored=1" : ",ignored=0"));
    g.init = [=](io<double>& x) {
      rng r(R * 37 + V);
      x.make("logits", {R, V}, r.normals(2.0));
      x.make_ints("targets", {R}, [&](index_t k) { return k == ignored_row ? index_t{-100} : r.integer(0, V - 1); });
      x.make("loss", {1}, [](index_t) { return 0.0; });
      x.make("row_loss", {R}, [](index_t) { return 0.0; });
      x.make("lse", {R}, [](index_t) { return 0.0; });
      x.make_ints("count", {1}, [](index_t) { return 0; });
    };
    g.wrt = {"logits"};
    g.outputs = {"loss"};
    g.forward = [smoothing](reference_backend& be, io<double>& x) {
      cross_entropy_forward(be, x.out<1>("loss"), x.out<1>("row_loss"),
                            cross_entropy_cache<double>{x.out<1>("lse"), x.iout<1>("count")}, x.in<2>("logits"),
                            x.iin<1>("targets"), smoothing);
    };
    g.backward = [smoothing](reference_backend& be, io<double>& x) {
      cross_entropy_backward(be, x.out<2>("dlogits"), x.in<1>("dloss"), x.in<2>("logits"), x.iin<1>("targets"),
                             cross_entropy_cache<double>{x.out<1>("lse"), x.iout<1>("count")}, smoothing);
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing
