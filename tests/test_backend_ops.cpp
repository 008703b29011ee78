// test_backend_ops: every op case on every backend against the reference backend in double.
// BLIP2_OPS_FILTER=substring selects cases by description or backend name.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
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

namespace {
// dinp of linear_backward and layer_norm_backward, with the parameter gradients (full) or with empty
// dweight and dbias views (frozen), on backend be in precision T.
template <class T, class Be>
void check_frozen_dinp_bitwise(Be& be, const std::string& what) {
  INFO(what);
  const index_t R = 37, K = 53, N = 29;
  rng r(5);
  auto filled = [&](std::initializer_list<index_t> shape) {
    io<T> x;
    x.make("t", std::vector<index_t>(shape), r.normals());
    return std::move(x.f["t"]);
  };
  auto inp = filled({R, K}), weight = filled({N, K}), dout = filled({R, N}), dweight = filled({N, K}),
       dbias = filled({N}), acc = filled({R, K});
  for (auto mode : {grad_write::assign, grad_write::accumulate}) {
    auto full = acc, frozen = acc;
    linear_backward(be, full.template view<2>(), dweight.template view<2>(), dbias.template view<1>(),
                    tensor_view<const T, 2>(dout.template view<2>()), tensor_view<const T, 2>(inp.template view<2>()),
                    tensor_view<const T, 2>(weight.template view<2>()), mode);
    linear_backward(be, frozen.template view<2>(), tensor_view<T, 2>{}, tensor_view<T, 1>{},
                    tensor_view<const T, 2>(dout.template view<2>()), tensor_view<const T, 2>(inp.template view<2>()),
                    tensor_view<const T, 2>(weight.template view<2>()), mode);
    CHECK_MESSAGE(std::memcmp(full.data.data(), frozen.data.data(), sizeof(T) * full.data.size()) == 0,
                  "linear_backward: frozen dinp differs from the full backward's");
  }
  // layer_norm over (R, K): the cache from forward, then backward full and frozen
  auto ln_w = filled({K}), ln_b = filled({K}), out = filled({R, K}), mean = filled({R}), rstd = filled({R}),
       ln_dout = filled({R, K}), ln_dw = filled({K}), ln_db = filled({K});
  layer_norm_forward(be, out.template view<2>(), layer_norm_cache<T>{mean.template view<1>(), rstd.template view<1>()},
                     inp.template view<2>(), ln_w.template view<1>(), ln_b.template view<1>(), 1e-5);
  for (auto mode : {grad_write::assign, grad_write::accumulate}) {
    auto full = acc, frozen = acc;
    const layer_norm_cache<T> cache{mean.template view<1>(), rstd.template view<1>()};
    layer_norm_backward(be, full.template view<2>(), ln_dw.template view<1>(), ln_db.template view<1>(),
                        ln_dout.template view<2>(), inp.template view<2>(), ln_w.template view<1>(), cache, mode);
    layer_norm_backward(be, frozen.template view<2>(), tensor_view<T, 1>{}, tensor_view<T, 1>{},
                        ln_dout.template view<2>(), inp.template view<2>(), ln_w.template view<1>(), cache, mode);
    CHECK_MESSAGE(std::memcmp(full.data.data(), frozen.data.data(), sizeof(T) * full.data.size()) == 0,
                  "layer_norm_backward: frozen dinp differs from the full backward's");
  }
}
}  // namespace

TEST_CASE("frozen backward: with empty dweight and dbias, dinp is bitwise the full backward's") {
  reference_backend rb;
  check_frozen_dinp_bitwise<double>(rb, "reference double");
  check_frozen_dinp_bitwise<float>(rb, "reference float");
#if BLIP2_TEST_ONEDNN
  onednn_backend ob;
  check_frozen_dinp_bitwise<float>(ob, "onednn f32");
  onednn_backend bf;
  bf.set_linear(onednn_backend::linear_precision::bf16);
  check_frozen_dinp_bitwise<float>(bf, "onednn bf16 linear");
#endif
}
