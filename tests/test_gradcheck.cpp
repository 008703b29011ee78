// test_gradcheck: every backward of the reference backend against central finite differences in double.
#include <doctest/doctest.h>

#include <cstdio>

#include "gradcheck/layer_norm_grad.hpp"
#include "gradcheck/linear_grad.hpp"
#include "gradcheck/softmax_grad.hpp"
#include "gradcheck/attention_grad.hpp"
#include "gradcheck/activation_grad.hpp"
#include "gradcheck/blocks_grad.hpp"
#include "gradcheck/dropout_grad.hpp"
#include "gradcheck/embedding_grad.hpp"
#include "gradcheck/l2_normalize_grad.hpp"
#include "gradcheck/row_max_grad.hpp"
#include "gradcheck/cross_entropy_grad.hpp"

using namespace blip2;
using namespace blip2::testing;

TEST_CASE("gradcheck: every backward matches central finite differences in double") {
  std::vector<grad_case> cases;
  add_layer_norm_grads(cases);
  add_linear_grads(cases);
  add_softmax_grads(cases);
  add_attention_grads(cases);
  add_activation_grads(cases);
  add_block_grads(cases);
  add_dropout_grads(cases);
  add_embedding_grads(cases);
  add_l2_normalize_grads(cases);
  add_row_max_grads(cases);
  add_cross_entropy_grads(cases);
  int ran = 0;
  for (const auto& gc : cases) {
    if (!selected(gc.desc)) continue;
    const auto rep = run_gradcheck(gc);
    ++ran;
    std::printf("[%s] %-60s max err/tol=%.2e %s\n", rep.ok ? " ok " : "FAIL", gc.desc.c_str(), rep.max_err,
                rep.why.c_str());
    CHECK_MESSAGE(rep.ok, gc.desc << ": " << rep.why);
  }
  CHECK(ran > 0);
}

TEST_CASE("kv_cache: prefill then one position per step equals one causal pass") {
  // the same sums in another grouping of rows: equal up to double rounding
  const double diff = kv_cache_decode_difference();
  std::printf("kv_cache decode: max |step output - full pass output| = %.2e\n", diff);
  CHECK(diff < 1e-12);
}

TEST_CASE("kv_cache: appending past the capacity and forking an incompatible cache are clear errors") {
  reference_backend be;
  std::vector<double> storage;
  kv_cache<double> a, b;
  lay_out(storage, [&](auto& c) {
    a.lay_out(c, 2, 3, 4, false);  // B = 2, 3 positions, C = 4, no gradients
    b.lay_out(c, 2, 2, 4, false);
  });
  CHECK(a.append(be, 2) == 0);
  CHECK(a.append(be, 1) == 2);
  CHECK_THROWS_WITH_AS(a.append(be, 1), doctest::Contains("1 more positions do not fit: 3 of 3"), shape_error);
  CHECK_THROWS_WITH_AS(b.fork_from(be, a), doctest::Contains("cannot fork a cache of batch 2 and 3 positions"),
                       shape_error);
}
