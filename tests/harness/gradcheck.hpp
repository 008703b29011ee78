// tests/harness/gradcheck.hpp: finite-difference checks of backward passes, in double, on the
// reference backend.
//
// For a case with inputs x (named float buffers listed in `wrt`) and outputs y, the checked scalar is
//     L(x) = sum over outputs o of sum(g_o * y_o),  g_o random and fixed,
// so backward is called with dout_o = g_o ("d" + output name) and must produce dL/dx in "d" + input
// name (zeroed before the call). Each analytic element is compared with the central difference
//     (L(x + h e_k) - L(x - h e_k)) / (2h),   h = 1e-5.
// Tolerance |analytic - numeric| <= 1e-7 + 1e-5 * |numeric|: in double the truncation error of the
// central difference is about h^2 |L'''| / 6 ~ 1e-11 and the round-off about 1e-16 |L| / h ~ 1e-11 |L|,
// so the bound leaves three to four orders of margin, while a wrong gradient is off by O(1).
// Large inputs are checked on a seeded sample of up to max_checked elements each.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "harness/buffers.hpp"

namespace blip2::testing {

struct grad_case {
  std::string desc;
  std::function<void(io<double>&)> init;  // inputs, parameters and output/cache buffers
  std::vector<std::string> wrt;           // inputs to differentiate; backward writes "d" + name
  std::vector<std::string> outputs;       // outputs of forward; backward reads "d" + name
  std::function<void(reference_backend&, io<double>&)> forward;
  std::function<void(reference_backend&, io<double>&)> backward;
  double h = 1e-5;
  double atol = 1e-7;
  double rtol = 1e-5;
  index_t max_checked = 48;
};

struct grad_report {
  bool ok = true;
  double max_err = 0;  // max |analytic - numeric| / (atol + rtol |numeric|), <= 1 passes
  std::string why;
};

inline double weighted_sum(const grad_case& gc, io<double>& x) {
  double L = 0;
  for (const auto& o : gc.outputs) {
    auto& y = x.fbuf(o);
    auto& g = x.fbuf("d" + o);
    for (index_t k = 0; k < y.size(); ++k) L += g.data[k] * y.data[k];
  }
  return L;
}

inline grad_report run_gradcheck(const grad_case& gc) {
  grad_report rep;
  reference_backend be;
  io<double> x;
  gc.init(x);
  rng r(1234);
  gc.forward(be, x);
  for (const auto& o : gc.outputs) x.make("d" + o, x.fbuf(o).shape, r.normals());
  for (const auto& w : gc.wrt) x.make("d" + w, x.fbuf(w).shape, [](index_t) { return 0.0; });
  gc.backward(be, x);
  for (const auto& w : gc.wrt) {
    if (!x.fbuf("d" + w).guard_intact()) {
      rep.ok = false;
      rep.why = "d" + w + ": guard elements overwritten";
      return rep;
    }
  }
  for (const auto& w : gc.wrt) {
    const index_t n = x.fbuf(w).size();
    std::vector<index_t> idx;
    if (n <= gc.max_checked) {
      for (index_t k = 0; k < n; ++k) idx.push_back(k);
    } else {
      for (index_t k = 0; k < gc.max_checked; ++k) idx.push_back(r.integer(0, n - 1));
    }
    for (index_t k : idx) {
      double& xk = x.fbuf(w).data[k];
      const double saved = xk;
      xk = saved + gc.h;
      gc.forward(be, x);
      const double lp = weighted_sum(gc, x);
      xk = saved - gc.h;
      gc.forward(be, x);
      const double lm = weighted_sum(gc, x);
      xk = saved;
      const double numeric = (lp - lm) / (2 * gc.h);
      const double analytic = x.fbuf("d" + w).data[k];
      const double err = std::abs(analytic - numeric) / (gc.atol + gc.rtol * std::abs(numeric));
      rep.max_err = std::max(rep.max_err, std::isfinite(err) ? err : 1e300);
      if (!(err <= 1.0) && rep.ok) {
        rep.ok = false;
        rep.why = "d" + w + "[" + std::to_string(k) + "]: analytic " + std::to_string(analytic) + ", numeric " +
                  std::to_string(numeric);
      }
    }
  }
  gc.forward(be, x);  // leave the outputs consistent with the inputs
  return rep;
}

}  // namespace blip2::testing
