// Conformance cases for adamw_update: one AdamW update of a segment (params, moments and gradients
// random, the moments non-negative where they must be), with and without weight decay, on the first
// step (the largest bias correction) and a later one, dense and strided (every other element).
#pragma once
#include <cmath>

#include "blip2/nn/adamw_update.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_adamw_cases(std::vector<op_case>& cases) {
  struct shape { index_t n; int step; bool decay; bool strided; };
  for (auto [n, step, decay, strided] : {shape{1, 1, true, false}, shape{37, 1, false, false}, shape{37, 7, true, false},
                                         shape{1000, 100, true, false}, shape{19, 3, true, true}}) {
    const index_t len = strided ? 2 * n : n;  // strided: the case's elements are every other one
    auto init = [=](io<double>& x) {
      rng r(n * 10 + step);
      x.make("p", {len}, r.normals());
      x.make("m", {len}, [&](index_t) { return step == 1 ? 0.0 : r.normal(0.1); });
      x.make("v", {len}, [&](index_t) { return step == 1 ? 0.0 : r.uniform(0.0, 0.05); });
      x.make("g", {len}, r.normals(0.5));
    };
    adamw_step_constants k;  // lr 1e-3, BLIP-2's betas and weight decay, at this step count
    const double lr = 1e-3, b1 = 0.9, b2 = 0.98, wd = 0.05;
    k.step_size = lr / (1.0 - std::pow(b1, step));
    k.bc2_sqrt = std::sqrt(1.0 - std::pow(b2, step));
    k.decay = decay ? 1.0 - lr * wd : 1.0;
    k.beta2 = b2;
    k.one_minus_beta1 = 1.0 - b1;
    k.one_minus_beta2 = 1.0 - b2;
    k.eps = 1e-8;
    auto run = [=](auto& be, auto& x) {
      const extents_t<1> e{n}, s{strided ? 2 : 1};
      adamw_update(be, x.template at<1>("p", e, s), x.template at<1>("m", e, s), x.template at<1>("v", e, s),
                   detail::as_const(x.template at<1>("g", e, s)), k);
    };
    cases.push_back(make_case("adamw_update",
                              describe("adamw_update", {{"n", n}, {"step", step}},
                                       std::string(decay ? "decay" : "no_decay") + (strided ? ",stride=2" : "")),
                              init, {"p", "m", "v"}, run));
  }
}

}  // namespace blip2::testing
