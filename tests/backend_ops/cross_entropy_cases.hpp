// Conformance cases for cross_entropy_forward / cross_entropy_backward.
#pragma once
#include <sstream>

#include "blip2/loss/cross_entropy.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_cross_entropy_cases(std::vector<op_case>& cases) {
  // ignored: how many rows (the first ones of every other row, then the rest) carry ignore_index;
  // ignore_index is -100, or a valid class (3) to show that it is compared, not range-checked.
  struct shape { index_t R, V; double smoothing; index_t ignored; index_t ignore_index; };
  for (const shape& s : {shape{1, 1, 0.0, 0, -100}, shape{1, 7, 0.1, 0, -100}, shape{5, 7, 0.0, 0, -100},
                         shape{7, 13, 0.1, 2, -100}, shape{13, 5, 0.1, 0, -100}, shape{5, 7, 0.1, 5, -100},
                         shape{16, 2, 0.0, 0, -100}, shape{7, 13, 0.0, 3, 3}, shape{4, 30522, 0.1, 1, -100}}) {
    const index_t R = s.R, V = s.V, ignored = s.ignored, ignore_index = s.ignore_index;
    const double smoothing = s.smoothing;
    auto init_inputs = [=](io<double>& x) {
      rng r(R * 23 + V);
      x.make("logits", {R, V}, [&](index_t) { return r.normal(3.0); });
      // rows 1, 3, 5, ... are ignored first, then 0, 2, 4, ...
      x.make_ints("targets", {R}, [&](index_t k) {
        const index_t rank = k % 2 == 1 ? k / 2 : (R / 2) + k / 2;
        index_t t = r.integer(0, V - 1);
        if (ignore_index >= 0 && ignore_index < V && t == ignore_index) t = (t + 1) % V;
        return rank < ignored ? ignore_index : t;
      });
      x.make("loss", {1}, [&](index_t) { return r.normal(); });  // pre-filled: must be written
      x.make("row_loss", {R}, [&](index_t) { return r.normal(); });
      x.make("lse", {R}, [&](index_t) { return r.normal(); });
      x.make_ints("count", {1}, [](index_t) { return -1; });
    };
    auto forward = [=](auto& be, auto& x) {
      using T = typename std::remove_cvref_t<decltype(x)>::scalar;
      cross_entropy_forward(be, x.template out<1>("loss"), x.template out<1>("row_loss"),
                            cross_entropy_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("lse"), x.template iout<1>("count")},
                            x.template in<2>("logits"), x.template iin<1>("targets"), smoothing, ignore_index);
    };
    std::ostringstream extra;
    extra << "smoothing=" << smoothing << ",ignored=" << ignored;
    if (ignore_index != -100) extra << ",ignore_index=" << ignore_index;
    cases.push_back(make_case("cross_entropy_forward",
                              describe("cross_entropy_forward", {{"R", R}, {"V", V}}, extra.str()), init_inputs,
                              {"loss", "row_loss", "lse", "count"}, forward));
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [=](io<double>& x) {
        init_inputs(x);
        reference_backend rb;
        forward(rb, x);  // lse and count, the cache backward needs
        rng r(R * 29 + V);
        x.make("dloss", {1}, [](index_t) { return 0.75; });
        x.make("dlogits", {R, V}, r.normals());  // pre-filled in both modes: assign must overwrite it
      };
      auto backward = [=](auto& be, auto& x) {
        using T = typename std::remove_cvref_t<decltype(x)>::scalar;
        cross_entropy_backward(be, x.template out<2>("dlogits"), x.template in<1>("dloss"), x.template in<2>("logits"),
                               x.template iin<1>("targets"),
                               cross_entropy_cache<T, typename std::remove_cvref_t<decltype(x)>::space>{x.template out<1>("lse"), x.template iout<1>("count")},
                               smoothing, ignore_index, mode);
      };
      const std::string m = mode == grad_write::accumulate ? ",accumulate" : ",assign";
      cases.push_back(make_case("cross_entropy_backward",
                                describe("cross_entropy_backward", {{"R", R}, {"V", V}}, extra.str() + m), init,
                                {"dlogits"}, backward));
    }
  }
}

}  // namespace blip2::testing
