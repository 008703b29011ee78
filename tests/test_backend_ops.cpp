// test_backend_ops: every op case on every backend against the reference backend in double; the op list
// (BLIP2_OP_LIST in backend/backend.hpp) walked: every op has a case, a kernel on every backend, and a
// row in the README's op table that says "fallback" exactly where the oneDNN kernel is one.
// BLIP2_OPS_FILTER=substring selects cases by description or backend name.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "backend_ops/adamw_cases.hpp"
#include "backend_ops/layer_norm_cases.hpp"
#include "backend_ops/linear_cases.hpp"
#include "backend_ops/linear_bf16_cases.hpp"
#include "backend_ops/softmax_cases.hpp"
#include "backend_ops/attention_cases.hpp"
#include "backend_ops/activation_cases.hpp"
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
  add_linear_bf16_cases(cases);
  add_softmax_cases(cases);
  add_attention_cases(cases);
  add_activation_cases(cases);
  add_dropout_cases(cases);
  add_embedding_cases(cases);
  add_l2_normalize_cases(cases);
  add_row_max_cases(cases);
  add_cross_entropy_cases(cases);
  add_elementwise_cases(cases);
  add_adamw_cases(cases);
  return cases;
}
}  // namespace

namespace {
// Whether backend `name` (as the harness names it: reference-f32, onednn, onednn-fused, ...) runs op Op
// through an explicit fallback.
template <class Op>
bool fallback_on(const std::string& backend_name) {
#if BLIP2_TEST_ONEDNN
  if (backend_name.rfind("onednn", 0) == 0) return is_fallback<onednn_backend, Op>();
#endif
#if BLIP2_TEST_CUDA
  if (backend_name.rfind("cuda", 0) == 0) return is_fallback<cuda_backend, Op>();
#endif
  (void)backend_name;
  return is_fallback<reference_backend, Op>();
}
}  // namespace

#if BLIP2_TEST_CUDA
// This program's build of the suite exists for the CUDA backend: without a device there is nothing to run.
bool cuda_device_or_skip() {
  std::string why;
  if (cuda_available(&why)) return true;
  MESSAGE("skipped: no CUDA device (" << why << ")");
  std::printf("skipped: no CUDA device (%s)\n", why.c_str());
  return false;
}
#else
bool cuda_device_or_skip() { return true; }
#endif

TEST_CASE("backend conformance: every op case on every backend matches the double reference") {
  if (!cuda_device_or_skip()) return;
  struct tally {
    int cases = 0;
    double worst = 0;  // max relative error
  };
  std::map<std::string, std::map<std::string, tally>> per_op;  // op -> backend -> tally
  int ran = 0;
  for (const auto& cs : all_cases()) {
    if (!selected(cs.desc)) continue;
    for (const auto& r : run_case(cs)) {
      ++ran;
      std::printf("[%s] %-14s %-60s nmse=%.2e max_rel=%.2e%s%s\n", r.cmp.ok ? " ok " : "FAIL", r.backend.c_str(),
                  r.desc.c_str(), r.cmp.nmse, r.cmp.max_rel, r.cmp.ok ? "" : "  ", r.cmp.why.c_str());
      CHECK_MESSAGE(r.cmp.ok, r.backend << " " << r.desc << ": " << r.cmp.why);
      auto& t = per_op[r.op][r.backend];
      ++t.cases;
      t.worst = std::max(t.worst, r.cmp.max_rel);
    }
  }
  // the table, op by op in the list's order: worst max |x - ref| / max |ref| per backend
  std::printf("\n%-24s %-22s %-8s %5s %s\n", "op", "backend", "kernel", "cases", "worst max|x-ref|/max|ref|");
  for_each_op([&](auto tag) {
    using Op = decltype(tag);
    const std::string name(Op::name);
    for (const auto& [backend_name, t] : per_op[name])
      std::printf("%-24s %-22s %-8s %5d %.2e\n", name.c_str(), backend_name.c_str(),
                  fallback_on<Op>(backend_name) ? "fallback" : "native", t.cases, t.worst);
  });
  CHECK(ran > 0);
}

TEST_CASE("op list: every op has a conformance case, and every case names an op of the list") {
  std::map<std::string, int> count;  // op name -> cases
  for_each_op([&](auto tag) { count[std::string(decltype(tag)::name)] = 0; });
  for (const auto& cs : all_cases()) {
    auto it = count.find(cs.op);
    CHECK_MESSAGE(it != count.end(), "case '" << cs.desc << "' names op '" << cs.op << "', which is not in BLIP2_OP_LIST");
    if (it != count.end()) ++it->second;
  }
  for (const auto& [name, n] : count) CHECK_MESSAGE(n > 0, "op '" << name << "' has no conformance case");
}

TEST_CASE("op list: every op has a kernel or an explicit fallback on every backend") {
  for_each_op([](auto tag) {
    using Op = decltype(tag);
    constexpr bool reference_has = has_kernel<reference_backend, Op>, reference_falls = is_fallback<reference_backend, Op>();
    CHECK_MESSAGE(reference_has, "reference backend: no kernel for op '" << Op::name << "'");
    CHECK_MESSAGE(!reference_falls, "reference backend: op '" << Op::name << "' is a fallback");
#if BLIP2_TEST_ONEDNN
    constexpr bool onednn_has = has_kernel<onednn_backend, Op>;
    CHECK_MESSAGE(onednn_has, "oneDNN backend: no kernel for op '" << Op::name << "'");
#endif
#if BLIP2_TEST_CUDA
    // no fallback: a host fallback cannot read device memory, so every op is a CUDA kernel
    constexpr bool cuda_has = has_kernel<cuda_backend, Op>, cuda_falls = is_fallback<cuda_backend, Op>();
    CHECK_MESSAGE(cuda_has, "CUDA backend: no kernel for op '" << Op::name << "'");
    CHECK_MESSAGE(!cuda_falls, "CUDA backend: op '" << Op::name << "' is a fallback");
#endif
  });
}

#if defined(BLIP2_README)
TEST_CASE("op list: README.md's op table has one row per op, and says fallback exactly where it is one") {
  // The table under the header "| op | reference | oneDNN backend | ...": the first cell holds the tag in
  // backticks, the third the oneDNN backend's kernel.
  std::ifstream in(BLIP2_README);
  REQUIRE_MESSAGE(in, "cannot read " << BLIP2_README);
  std::map<std::string, std::string> onednn_cell;  // tag -> oneDNN column
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (line.rfind("| op | reference | oneDNN backend |", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    if (line.empty() || line[0] != '|') break;  // the table ends at its first non-row line
    if (line.rfind("|---", 0) == 0) continue;
    std::vector<std::string> cells;
    std::stringstream row(line.substr(1));
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(cell);
    REQUIRE_MESSAGE(cells.size() >= 3, "README op table: a row with fewer than 3 cells: " << line);
    const auto a = cells[0].find('`'), b = cells[0].find('`', a + 1);
    REQUIRE_MESSAGE((a != std::string::npos && b != std::string::npos), "README op table: no `tag` in: " << line);
    const std::string tag = cells[0].substr(a + 1, b - a - 1);
    CHECK_MESSAGE(onednn_cell.count(tag) == 0, "README op table: op '" << tag << "' has two rows");
    onednn_cell[tag] = cells[2];
  }
  REQUIRE_MESSAGE(!onednn_cell.empty(), "README.md has no op table (header '| op | reference | oneDNN backend |')");
  std::set<std::string> listed;
  for_each_op([&](auto tag) {
    using Op = decltype(tag);
    const std::string name(Op::name);
    listed.insert(name);
    auto it = onednn_cell.find(name);
    if (it == onednn_cell.end()) {
      FAIL_CHECK("README op table: no row for op '" << name << "'");
      return;
    }
#if BLIP2_TEST_ONEDNN
    const bool says_fallback = it->second.find("fallback") != std::string::npos;
    constexpr bool falls_back = is_fallback<onednn_backend, Op>();
    CHECK_MESSAGE(says_fallback == falls_back, "README op table: op '" << name << "' is " << std::string(falls_back ? "" : "not ")
                                                << "a fallback on the oneDNN backend, but its row says:" << it->second);
#endif
  });
  for (const auto& [tag, cell] : onednn_cell)
    CHECK_MESSAGE(listed.count(tag) == 1, "README op table: row for '" << tag << "', which is not in BLIP2_OP_LIST");
}
#endif

TEST_CASE("backend conformance: the harness fails when one output element is perturbed") {
  if (!cuda_device_or_skip()) return;
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
