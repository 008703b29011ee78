// test_gradcheck: every backward of the reference backend against central finite differences in double.
#include <doctest/doctest.h>

#include <cstdio>

#include "gradcheck/layer_norm_grad.hpp"
#include "gradcheck/linear_grad.hpp"
#include "gradcheck/softmax_grad.hpp"
#include "gradcheck/attention_grad.hpp"
#include "gradcheck/gelu_grad.hpp"
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
  add_gelu_grads(cases);
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
