// test_backend_ops: every op case on every backend against the reference backend in double.
// BLIP2_OPS_FILTER=substring selects cases by description or backend name.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>

#include "backend_ops/layer_norm_cases.hpp"
#include "backend_ops/linear_cases.hpp"
#include "backend_ops/softmax_cases.hpp"
#include "backend_ops/attention_cases.hpp"
#include "backend_ops/gelu_cases.hpp"
#include "backend_ops/dropout_cases.hpp"
#include "backend_ops/embedding_cases.hpp"
#include "backend_ops/l2_normalize_cases.hpp"
#include "backend_ops/row_max_cases.hpp"
#include "backend_ops/cross_entropy_cases.hpp"
#include "backend_ops/elementwise_cases.hpp"

using namespace blip2;
using namespace blip2::testing;

namespace {
std::vector<op_case> all_cases() {
  std::vector<op_case> cases;
  add_layer_norm_cases(cases);
  add_linear_cases(cases);
  add_softmax_cases(cases);
  add_attention_cases(cases);
  add_gelu_cases(cases);
  add_dropout_cases(cases);
  add_embedding_cases(cases);
  add_l2_normalize_cases(cases);
  add_row_max_cases(cases);
  add_cross_entropy_cases(cases);
  add_elementwise_cases(cases);
  return cases;
}
}  // namespace

TEST_CASE("backend conformance: every op case on every backend matches the double reference") {
  std::map<std::string, double> worst;  // "op backend" -> max relative error
  int ran = 0;
  for (const auto& cs : all_cases()) {
    if (!selected(cs.desc)) continue;
    for (const auto& r : run_case(cs)) {
      ++ran;
      std::printf("[%s] %-14s %-60s nmse=%.2e max_rel=%.2e%s%s\n", r.cmp.ok ? " ok " : "FAIL", r.backend.c_str(),
                  r.desc.c_str(), r.cmp.nmse, r.cmp.max_rel, r.cmp.ok ? "" : "  ", r.cmp.why.c_str());
      CHECK_MESSAGE(r.cmp.ok, r.backend << " " << r.desc << ": " << r.cmp.why);
      auto& w = worst[r.op + " " + r.backend];
      w = std::max(w, r.cmp.max_rel);
    }
  }
  std::printf("\nworst max |x - ref| / max |ref| per op and backend:\n");
  for (const auto& [k, v] : worst) std::printf("  %-40s %.2e\n", k.c_str(), v);
  CHECK(ran > 0);
}

TEST_CASE("backend conformance: the harness fails when one output element is perturbed") {
  int checked = 0;
  for (const auto& cs : all_cases()) {
    if (!selected(cs.desc)) continue;
    for (std::size_t o = 0; o < cs.outputs.size(); ++o) {
      for (const auto& r : run_case(cs, static_cast<long>(o))) {
        ++checked;
        CHECK_MESSAGE(!r.cmp.ok, r.backend << " " << r.desc << ": perturbing output '" << cs.outputs[o]
                                           << "' went unnoticed");
      }
    }
  }
  CHECK(checked > 0);
}
