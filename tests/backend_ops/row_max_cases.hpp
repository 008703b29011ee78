// Conformance cases for row_max_forward / row_max_backward.
#pragma once
#include <cmath>
#include <limits>

#include "blip2/nn/row_max.hpp"
#include "harness/backend_ops.hpp"

namespace blip2::testing {

inline void add_row_max_cases(std::vector<op_case>& cases) {
  // Values are multiples of 1/1024 (exact in float), so float and double see the same order and the
  // same ties. ties: values from {0, 1, 2, 3}, many equal maxima per row (the first index must win).
  // nan: row 0 starts with NaN, row 2 has NaN after its max, row 4 has two NaNs (the first must win).
  struct shape { index_t R, N; bool ties, nan; };
  for (const shape& s : {shape{1, 1, false, false}, shape{5, 7, false, false}, shape{7, 13, false, false},
                         shape{13, 5, false, false}, shape{64, 32, false, false}, shape{13, 7, true, false},
                         shape{7, 13, false, true}}) {
    const index_t R = s.R, N = s.N;
    const bool ties = s.ties, nan = s.nan;
    auto init_inputs = [=](io<double>& x) {
      rng r(R * 19 + N);
      x.make("inp", {R, N}, [&](index_t) {
        return ties ? static_cast<double>(r.integer(0, 3)) : std::round(r.normal(3.0) * 1024.0) / 1024.0;
      });
      if (nan) {
        auto& v = x.fbuf("inp").data;
        const double q = std::numeric_limits<double>::quiet_NaN();
        v[0 * N + 0] = q;
        v[2 * N + N - 2] = q;
        v[4 * N + 3] = q;
        v[4 * N + 9] = q;
      }
      x.make("max", {R}, [&](index_t) { return r.normal(); });  // pre-filled: every row must be written
      x.make_ints("argmax", {R}, [](index_t) { return -1; });
    };
    auto forward = [](auto& be, auto& x) {
      row_max_forward(be, x.template out<1>("max"), x.template iout<1>("argmax"), x.template in<2>("inp"));
    };
    const std::string extra = ties ? "ties" : nan ? "nan" : "";
    cases.push_back(make_case("row_max_forward", describe("row_max_forward", {{"R", R}, {"N", N}}, extra), init_inputs,
                              {"max", "argmax"}, forward));
    for (auto mode : {grad_write::assign, grad_write::accumulate}) {
      auto init = [=](io<double>& x) {
        init_inputs(x);
        reference_backend rb;
        forward(rb, x);  // argmax, the cache backward needs
        rng r(R * 2 + N);
        x.make("dmax", {R}, r.normals());
        x.make("dinp", {R, N}, r.normals());  // pre-filled in both modes: assign must overwrite it
      };
      auto backward = [mode](auto& be, auto& x) {
        row_max_backward(be, x.template out<2>("dinp"), x.template in<1>("dmax"), x.template iin<1>("argmax"), mode);
      };
      const std::string m = mode == grad_write::accumulate ? "accumulate" : "assign";
      cases.push_back(make_case("row_max_backward",
                                describe("row_max_backward", {{"R", R}, {"N", N}},
                                         m + (extra.empty() ? "" : "," + extra)),
                                init, {"dinp"}, backward));
    }
  }
}

}  // namespace blip2::testing
