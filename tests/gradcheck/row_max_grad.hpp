// Finite-difference checks for row_max_backward. No ties: with this seed the two largest values of every
// row differ by far more than the step h = 1e-5, so the argmax is the same in both evaluations of the
// central difference (the max is differentiable there, with gradient onehot(argmax)).
#pragma once
#include "blip2/nn/row_max.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_row_max_grads(std::vector<grad_case>& cases) {
  grad_case g;
  g.desc = describe("row_max", {{"R", 4}, {"N", 7}}, "no_ties");
  g.init = [](io<double>& x) {
    rng r(404);
    x.make("inp", {4, 7}, r.normals());
    x.make("max", {4}, [](index_t) { return 0.0; });
    x.make_ints("argmax", {4}, [](index_t) { return 0; });
  };
  g.wrt = {"inp"};
  g.outputs = {"max"};
  g.forward = [](reference_backend& be, io<double>& x) {
    row_max_forward(be, x.out<1>("max"), x.iout<1>("argmax"), x.in<2>("inp"));
  };
  g.backward = [](reference_backend& be, io<double>& x) {
    row_max_backward(be, x.out<2>("dinp"), x.in<1>("dmax"), x.iin<1>("argmax"));
  };
  cases.push_back(std::move(g));
}

}  // namespace blip2::testing
