// test_ops_by_hand: small cases of gelu, l2_normalize, row_max, embedding, cross_entropy, bfloat16
// rounding and the bfloat16-weight linear whose answers are worked out by hand in the comments, the errors their public functions
// raise, and the oneDNN linear's bf16 mode against the double reference on rounded inputs. The
// conformance and finite-difference tests compare implementations with each other; these pin the
// reference itself to the definitions (PyTorch semantics).
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/bfloat16.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/loss/cross_entropy.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/l2_normalize.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/linear_bf16.hpp"
#include "blip2/nn/row_max.hpp"
#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif

using namespace blip2;

namespace {
// The message of the error f throws (empty when it throws nothing).
template <class Error, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

// logits (3, 3), targets {2, ignored, 0}, label smoothing 0.3, dloss = 1 (see the test below).
template <class T, class Be>
void check_cross_entropy_by_hand(Be& be, double tol) {
  const std::string where = std::string(Be::name) + (sizeof(T) == 4 ? " float" : " double");
  INFO(where);
  const T ln2 = static_cast<T>(std::log(2.0)), ln3 = static_cast<T>(std::log(3.0));
  host_tensor<T, 2> logits({3, 3});
  const T z[9] = {0, 0, ln2, 5, -1, 2, ln3, 0, 0};
  for (index_t k = 0; k < 9; ++k) logits[k] = z[k];
  host_tensor<index_t, 1> targets({3});
  targets[0] = 2;
  targets[1] = -100;
  targets[2] = 0;
  host_tensor<T, 1> loss({1}), row_loss({3}), lse({3});
  host_tensor<index_t, 1> count({1});
  cross_entropy_forward(be, loss, row_loss, cross_entropy_cache<T>{lse.view(), count.view()}, logits, targets, 0.3);
  const double l2 = std::log(2.0), l3 = std::log(3.0), l5 = std::log(5.0);
  CHECK(count[0] == 2);
  CHECK(std::abs(lse[0] - 2 * l2) <= tol);
  CHECK(std::abs(lse[2] - l5) <= tol);
  CHECK(std::abs(row_loss[0] - 1.2 * l2) <= tol);
  CHECK(row_loss[1] == 0);
  CHECK(std::abs(row_loss[2] - (l5 - 0.8 * l3)) <= tol);
  CHECK(std::abs(loss[0] - (1.2 * l2 + l5 - 0.8 * l3) / 2) <= tol);

  host_tensor<T, 2> dlogits({3, 3}, T(9));  // assign must overwrite the 9s
  host_tensor<T, 1> dloss({1}, T(1));
  cross_entropy_backward(be, dlogits, dloss, logits, targets, cross_entropy_cache<T>{lse.view(), count.view()}, 0.3);
  const double expected[9] = {0.075, 0.075, -0.15, 0, 0, 0, -0.1, 0.05, 0.05};
  for (index_t k = 0; k < 9; ++k) {
    CAPTURE(k);
    CHECK(std::abs(dlogits[k] - expected[k]) <= tol);
  }
  // accumulate adds the same gradient to what is there
  cross_entropy_backward(be, dlogits, dloss, logits, targets, cross_entropy_cache<T>{lse.view(), count.view()}, 0.3,
                         -100, grad_write::accumulate);
  for (index_t k = 0; k < 9; ++k) CHECK(std::abs(dlogits[k] - 2 * expected[k]) <= 2 * tol);
}
}  // namespace

TEST_CASE("cross_entropy: a 3 x 3 case by hand (label smoothing 0.3, one ignored row)") {
  // row 0: z = (0, 0, ln 2), target 2. sum exp z = 1 + 1 + 2 = 4, lse = ln 4 = 2 ln 2.
  //   nll = lse - z[2] = ln 2; mean_c (lse - z[c]) = 2 ln 2 - (ln 2) / 3 = (5/3) ln 2;
  //   row loss = 0.7 ln 2 + 0.3 (5/3) ln 2 = 1.2 ln 2.
  // row 1: target ignore_index (-100): row loss 0, not counted.
  // row 2: z = (ln 3, 0, 0), target 0. sum exp z = 5, lse = ln 5.
  //   row loss = 0.7 (ln 5 - ln 3) + 0.3 (ln 5 - (ln 3) / 3) = ln 5 - 0.8 ln 3.
  // count = 2, loss = (1.2 ln 2 + ln 5 - 0.8 ln 3) / 2.
  // dloss = 1: every counted row gets 1 / count = 0.5, q = 0.7 onehot + 0.1:
  //   row 0: softmax (1/4, 1/4, 1/2) - q (0.1, 0.1, 0.8) = (0.15, 0.15, -0.3), times 0.5: (0.075, 0.075, -0.15)
  //   row 1: 0
  //   row 2: softmax (3/5, 1/5, 1/5) - q (0.8, 0.1, 0.1) = (-0.2, 0.1, 0.1), times 0.5: (-0.1, 0.05, 0.05)
  reference_backend ref;
  check_cross_entropy_by_hand<double>(ref, 1e-14);
  check_cross_entropy_by_hand<float>(ref, 1e-6);  // a few float roundings of values of order 1
#if BLIP2_HAS_ONEDNN
  // oneDNN's vectorised log-softmax uses polynomial exp and log good to a few float ulp: measured 3.2e-6
  // on lse = ln 5 (2e-6 relative, about 16 ulp), so 1e-5 here
  onednn_backend dnn;
  check_cross_entropy_by_hand<float>(dnn, 1e-5);
#endif
}

TEST_CASE("cross_entropy: no counted row gives loss 0 and no gradient (PyTorch: NaN); bad arguments throw") {
  reference_backend be;
  host_tensor<double, 2> logits({2, 3}, 0.5);
  host_tensor<index_t, 1> targets({2}, -100);
  host_tensor<double, 1> loss({1}, 7.0), row_loss({2}), lse({2}), dloss({1}, 1.0);
  host_tensor<index_t, 1> count({1}, 5);
  cross_entropy_cache<double> cache{lse.view(), count.view()};
  cross_entropy_forward(be, loss, row_loss, cache, logits, targets);
  CHECK(loss[0] == 0.0);
  CHECK(count[0] == 0);
  host_tensor<double, 2> dlogits({2, 3}, 3.0);
  cross_entropy_backward(be, dlogits, dloss, logits, targets, cache);
  for (index_t k = 0; k < 6; ++k) CHECK(dlogits[k] == 0.0);

  targets[1] = 3;  // V = 3: out of range, and not ignore_index
  const auto msg = message_of<value_error>([&] { cross_entropy_forward(be, loss, row_loss, cache, logits, targets); });
  CHECK(msg.find("targets(1) = 3") != std::string::npos);
  CHECK(msg.find("V = 3") != std::string::npos);
  targets[1] = 2;
  CHECK_THROWS_AS(cross_entropy_forward(be, loss, row_loss, cache, logits, targets, 1.5), value_error);
  CHECK_THROWS_AS(cross_entropy_forward(be, loss, row_loss, cache, logits, targets, -0.1), value_error);
  host_tensor<double, 1> short_row_loss({1});
  CHECK_THROWS_AS(cross_entropy_forward(be, loss, short_row_loss, cache, logits, targets), shape_error);
}

TEST_CASE("gelu: values and derivatives by hand") {
  // Phi(1) = 0.841344746068543, phi(1) = exp(-1/2) / sqrt(2 pi) = 0.241970724519143
  // gelu(1) = Phi(1), gelu(-1) = -Phi(-1) = -(1 - Phi(1)), gelu(0) = 0
  // gelu'(x) = Phi(x) + x phi(x): gelu'(1) = 1.083315470587686, gelu'(-1) = 1 - gelu'(1), gelu'(0) = 0.5
  reference_backend be;
  host_tensor<double, 1> x({4}), y({4}), dx({4}), dy({4}, 1.0);
  x[0] = 1;
  x[1] = -1;
  x[2] = 0;
  x[3] = std::numeric_limits<double>::quiet_NaN();
  gelu_forward(be, y, x);
  gelu_backward(be, dx, dy, x);
  CHECK(std::abs(y[0] - 0.841344746068543) < 1e-14);
  CHECK(std::abs(y[1] + 0.158655253931457) < 1e-14);
  CHECK(y[2] == 0.0);
  CHECK(std::isnan(y[3]));
  CHECK(std::abs(dx[0] - 1.083315470587686) < 1e-14);
  CHECK(std::abs(dx[1] + 0.083315470587686) < 1e-14);
  CHECK(dx[2] == 0.5);
  CHECK(std::isnan(dx[3]));
}

TEST_CASE("l2_normalize: (3, 4) -> (0.6, 0.8), a zero row stays zero, its gradient is dout / eps") {
  reference_backend be;
  host_tensor<double, 2> x({2, 2}), y({2, 2}), dx({2, 2}), dy({2, 2}, 1.0);
  host_tensor<double, 1> norm({2});
  x(0, 0) = 3;
  x(0, 1) = 4;
  l2_normalize_forward(be, y, x, l2_normalize_cache<double>{norm.view()});
  CHECK(norm[0] == 5.0);
  CHECK(std::abs(y(0, 0) - 0.6) < 1e-15);
  CHECK(std::abs(y(0, 1) - 0.8) < 1e-15);
  CHECK(y(1, 0) == 0.0);
  CHECK(y(1, 1) == 0.0);
  // dx = dy / n - x (x . dy) / n^3 = (1, 1) / 5 - (3, 4) 7 / 125 = (0.032, -0.024)
  l2_normalize_backward(be, dx, dy, x, l2_normalize_cache<double>{norm.view()});
  CHECK(std::abs(dx(0, 0) - 0.032) < 1e-15);
  CHECK(std::abs(dx(0, 1) + 0.024) < 1e-15);
  CHECK(std::abs(dx(1, 0) - 1e12) <= 1e-3);  // 1 / eps
  CHECK_THROWS_AS(l2_normalize_forward(be, y, x, l2_normalize_cache<double>{norm.view()}, 0.0), value_error);
}

TEST_CASE("row_max: ties keep the first index, the first NaN wins, backward scatters one element") {
  reference_backend be;
  host_tensor<float, 2> x({3, 4});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float v[12] = {1, 3, 3, 2, -1, nan, 5, nan, -4, -2, -2, -3};
  for (index_t k = 0; k < 12; ++k) x[k] = v[k];
  host_tensor<float, 1> m({3});
  host_tensor<index_t, 1> a({3});
  row_max_forward(be, m, a, x);
  CHECK(m[0] == 3.0f);
  CHECK(a[0] == 1);
  CHECK(std::isnan(m[1]));
  CHECK(a[1] == 1);
  CHECK(m[2] == -2.0f);
  CHECK(a[2] == 1);
  host_tensor<float, 2> dx({3, 4}, 5.0f);
  host_tensor<float, 1> dm({3}, 2.0f);
  row_max_backward(be, dx, dm, a, grad_write::accumulate);
  CHECK(dx(0, 1) == 7.0f);
  CHECK(dx(0, 0) == 5.0f);
  row_max_backward(be, dx, dm, a);
  CHECK(dx(0, 1) == 2.0f);
  CHECK(dx(0, 0) == 0.0f);
  a[2] = 4;
  CHECK_THROWS_AS(row_max_backward(be, dx, dm, a), value_error);
}

TEST_CASE("embedding: gather, scatter-add of repeated ids, and an id outside [0, V) named with its position") {
  reference_backend be;
  host_tensor<double, 2> table({3, 2});
  for (index_t k = 0; k < 6; ++k) table[k] = static_cast<double>(k);  // row v = (2v, 2v + 1)
  host_tensor<index_t, 2> ids({2, 2});
  ids(0, 0) = 2;
  ids(0, 1) = 0;
  ids(1, 0) = 2;
  ids(1, 1) = 2;
  host_tensor<double, 3> out({2, 2, 2});
  embedding_forward(be, out, ids, table);
  CHECK(out(0, 0, 0) == 4.0);
  CHECK(out(0, 1, 1) == 1.0);
  CHECK(out(1, 1, 1) == 5.0);
  host_tensor<double, 2> dtable({3, 2}, 1.0);
  host_tensor<double, 3> dout({2, 2, 2}, 0.5);
  embedding_backward(be, dtable, dout, ids);
  CHECK(dtable(2, 0) == 2.5);  // 1 + three times 0.5
  CHECK(dtable(0, 1) == 1.5);
  CHECK(dtable(1, 0) == 1.0);  // untouched row
  embedding_backward(be, dtable, dout, ids, /*padding_idx=*/2);
  CHECK(dtable(2, 0) == 2.5);  // the padding row gets nothing
  CHECK(dtable(0, 1) == 2.0);  // the others still do
  ids(1, 0) = 3;
  const auto msg = message_of<value_error>([&] { embedding_forward(be, out, ids, table); });
  CHECK(msg.find("ids(1, 0) = 3") != std::string::npos);
  CHECK(msg.find("V = 3") != std::string::npos);
  ids(1, 0) = -1;
  CHECK_THROWS_AS(embedding_backward(be, dtable, dout, ids), value_error);
}

TEST_CASE("fill and the host copies: values, strides, and a shape mismatch named with both shapes") {
  reference_backend be;
  host_tensor<float, 2> a({2, 3});
  fill(be, a, 2);  // an int converted to float
  CHECK(a(1, 2) == 2.0f);
  fill(be, tensor_view<float, 1>(a.data(), {2}, {3}), -1.5);  // column 0 only
  CHECK(a(0, 0) == -1.5f);
  CHECK(a(1, 0) == -1.5f);
  CHECK(a(1, 1) == 2.0f);
  host_tensor<float, 2> h({3, 2});
  copy_to_host(be, transpose(h.view()), a);  // h = a^T
  CHECK(h(0, 1) == -1.5f);
  CHECK(h(2, 0) == 2.0f);
  host_tensor<float, 2> back({2, 3});
  copy_from_host(be, back, transpose(h.view()));
  for (index_t k = 0; k < 6; ++k) CHECK(back[k] == a[k]);
  std::string msg = message_of<shape_error>([&] { copy_to_host(be, h, a); });
  CHECK(msg.find("copy_to_host: tensor 'host_dst' has shape (3, 2) but (2, 3) was expected") != std::string::npos);
  msg = message_of<shape_error>([&] { copy_from_host(be, h, a); });
  CHECK(msg.find("copy_from_host: tensor 'dst' has shape (3, 2) but (2, 3) was expected") != std::string::npos);
#if BLIP2_HAS_ONEDNN
  onednn_backend ob;
  fill(ob, a, 0.25f);
  copy_to_host(ob, transpose(h.view()), a);
  CHECK(h(2, 1) == 0.25f);
  CHECK_THROWS_AS(copy_from_host(ob, h, a), shape_error);
#endif
}

TEST_CASE("frozen backward: empty dweight and dbias are accepted; the views that are given are still checked") {
  reference_backend be;
  host_tensor<double, 2> inp({3, 4}, 0.5), dout({3, 2}, 1.0), weight({2, 4}, 0.25), dinp({3, 4});
  host_tensor<double, 2> bad_dw({4, 2});
  host_tensor<double, 1> dbias({2});
  const tensor_view<double, 2> no_dw{};
  const tensor_view<double, 1> no_db{};
  linear_backward(be, dinp, no_dw, no_db, dout, inp, weight);
  CHECK(dinp(2, 3) == 0.5);  // sum over N = 2 of 1 * 0.25
  linear_backward(be, dinp, no_dw, dbias, dout, inp, weight);  // dbias alone
  CHECK(dbias(1) == 3.0);
  std::string msg = message_of<shape_error>([&] { linear_backward(be, dinp, bad_dw, no_db, dout, inp, weight); });
  CHECK(msg.find("linear_backward: tensor 'dweight' has shape (4, 2) but (2, 4) was expected") != std::string::npos);
  host_tensor<double, 2> ln_inp({3, 4}), ln_dinp({3, 4});
  for (index_t k = 0; k < 12; ++k) ln_inp[k] = static_cast<double>(k % 5);
  host_tensor<double, 1> w({4}, 1.0), b({4}, 0.0), mean({3}), rstd({3}), bad_db({3});
  host_tensor<double, 2> out({3, 4}), ln_dout({3, 4}, 1.0);
  const layer_norm_cache<double> cache{mean.view(), rstd.view()};
  layer_norm_forward(be, out, cache, ln_inp, w, b, 1e-5);
  layer_norm_backward(be, ln_dinp, no_db, no_db, ln_dout, ln_inp, w, cache);
  for (index_t k = 0; k < 12; ++k) CHECK(std::abs(ln_dinp[k]) < 1e-12);  // a constant dout has no effect
  msg = message_of<shape_error>([&] { layer_norm_backward(be, ln_dinp, no_db, bad_db, ln_dout, ln_inp, w, cache); });
  CHECK(msg.find("layer_norm_backward: tensor 'dbias' has shape (3) but (4) was expected") != std::string::npos);
  msg = message_of<shape_error>(
      [&] { layer_norm_backward(be, tensor_view<double, 2>{}, no_db, no_db, ln_dout, ln_inp, w, cache); });
  CHECK(msg.find("layer_norm_backward: dinp is required") != std::string::npos);
}

TEST_CASE("round_to_bf16: nearest with ties to even, overflow to infinity, NaN and infinities kept") {
  auto bits = [](float x) { return std::bit_cast<std::uint32_t>(x); };
  auto of = [](std::uint32_t u) { return std::bit_cast<float>(u); };
  // bfloat16 keeps the top 16 bits; around 1 its step is 2^-7.
  CHECK(round_to_bf16(1.0f) == 1.0f);
  CHECK(round_to_bf16(1.0f + 0x1p-8f) == 1.0f);                      // halfway, 1 is even: down
  CHECK(round_to_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);        // halfway, 1 + 2^-6 is even: up
  CHECK(round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);  // past halfway: up
  CHECK(round_to_bf16(-(1.0f + 3 * 0x1p-8f)) == -(1.0f + 0x1p-6f));   // sign-symmetric
  CHECK(round_to_bf16(0.1f) == of(0x3DCD0000u));                      // 0x3DCCCCCD: past halfway, up
  CHECK(bits(round_to_bf16(of(0x00018000u))) == 0x00020000u);         // subnormals round the same way
  CHECK(bits(round_to_bf16(of(0x00008000u))) == 0u);                  // half the smallest: to 0 (even)
  CHECK(round_to_bf16(of(0x7F7F0000u)) == of(0x7F7F0000u));           // the largest bfloat16 stays
  CHECK(std::isinf(round_to_bf16(std::numeric_limits<float>::max())));  // past it by more than half a step
  CHECK(round_to_bf16(-std::numeric_limits<float>::infinity()) == -std::numeric_limits<float>::infinity());
  const float nan = round_to_bf16(std::numeric_limits<float>::quiet_NaN());
  CHECK(std::isnan(nan));
  CHECK(std::isnan(round_to_bf16(of(0x7F80FFFFu))));  // a NaN whose carry would reach the exponent
  CHECK((bits(nan) & 0xFFFFu) == 0u);
}

TEST_CASE("to_bfloat16: one value and whole buffers round as round_to_bf16; to_float widens exactly") {
  auto bits = [](float x) { return std::bit_cast<std::uint32_t>(x); };
  // specials, then bit patterns from a counter-based hash: every class (subnormals, NaNs, huge values)
  std::vector<float> x = {0.0f, -0.0f, 1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 0.1f,
                          std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                          std::bit_cast<float>(0x7F80FFFFu), std::bit_cast<float>(0xFF800001u),
                          std::bit_cast<float>(0x00018000u), std::bit_cast<float>(0x00008000u)};
  for (std::uint64_t i = 0; x.size() < 300001; ++i)  // more than four chunks of 2^16: the threaded loop
    x.push_back(std::bit_cast<float>(random_bits(11, i)[0]));
  std::vector<bfloat16> b(x.size());
  to_bfloat16(x.data(), b.data(), x.size());
  std::vector<float> back(x.size());
  to_float(b.data(), back.data(), b.size());
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::uint32_t want = bits(round_to_bf16(x[i]));
    if (bits(to_float(to_bfloat16(x[i]))) != want || bits(to_float(b[i])) != want || bits(back[i]) != want) ++wrong;
  }
  CHECK(wrong == 0);
  CHECK(to_bfloat16(1.0f).bits == 0x3F80);
  CHECK(to_bfloat16(-2.0f).bits == 0xC000);
  CHECK(to_float(bfloat16{0x4049}) == 3.140625f);
  to_bfloat16(x.data(), b.data(), 0);  // nothing to do
}

namespace {
// out = inp W^T + bias for inp (2, 3), W (2, 3) (values exact in bfloat16), bias (2):
//   row 0:  1*1 + 2*0.5 + 3*(-2) + 0.5 = -3.5      1*0.25 + 2*1 + 3*3 - 1 = 10.25
//   row 1: -1*1 + 0*0.5 + 0.5*(-2) + 0.5 = -1.5   -1*0.25 + 0*1 + 0.5*3 - 1 = 0.25
template <class T, class Be>
void check_linear_bf16_by_hand(Be& be, const std::string& where) {
  INFO(where);
  host_tensor<T, 2> inp({2, 3}), out({2, 2});
  host_tensor<T, 1> bias({2});
  host_tensor<bfloat16, 2> w({2, 3});
  const float wv[6] = {1, 0.5f, -2, 0.25f, 1, 3};
  const T iv[6] = {1, 2, 3, -1, 0, 0.5};
  for (index_t k = 0; k < 6; ++k) w[k] = to_bfloat16(wv[k]), inp[k] = iv[k];
  bias[0] = 0.5, bias[1] = -1;
  linear_bf16_forward(be, out, inp, w, bias);
  CHECK(out(0, 0) == T(-3.5));
  CHECK(out(0, 1) == T(10.25));
  CHECK(out(1, 0) == T(-1.5));
  CHECK(out(1, 1) == T(0.25));
  linear_bf16_forward(be, out, inp, w);  // no bias
  CHECK(out(0, 0) == T(-4));
  CHECK(out(1, 1) == T(1.25));
}
}  // namespace

TEST_CASE("linear_bf16_forward: a 2 x 3 case by hand on every kernel; shapes checked with both named") {
  reference_backend rb;
  check_linear_bf16_by_hand<double>(rb, "reference double");
  check_linear_bf16_by_hand<float>(rb, "reference float");
#if BLIP2_HAS_ONEDNN
  using bf16_kernels = onednn_backend::bf16_kernels;
  for (auto k : {bf16_kernels::automatic, bf16_kernels::avx512, bf16_kernels::avx2, bf16_kernels::reference}) {
    onednn_backend be;
    be.set_bf16_kernel(k);
    const std::string where = "onednn kernel " + std::to_string(static_cast<int>(k));
    if (onednn_detail::bf16_kernel_available(k)) {
      check_linear_bf16_by_hand<float>(be, where);
    } else {  // naming a kernel this CPU lacks is an error, not a silent change of kernel
      host_tensor<float, 2> inp({2, 3}), out({2, 2});
      host_tensor<bfloat16, 2> w({2, 3});
      CHECK(message_of<backend_error>([&] { linear_bf16_forward(be, out, inp, w); }).find("this CPU lacks it") !=
            std::string::npos);
    }
  }
#endif
  host_tensor<float, 2> inp({2, 3}), out({2, 2}), out_wrong({2, 3});
  host_tensor<bfloat16, 2> w({2, 3}), w_wrong({2, 4});
  host_tensor<float, 1> bias_wrong({3});
  CHECK(message_of<shape_error>([&] { linear_bf16_forward(rb, out, inp, w_wrong); }) ==
        "linear_bf16_forward: tensor 'weight' has shape (2, 4) but (2, 3) was expected");
  CHECK(message_of<shape_error>([&] { linear_bf16_forward(rb, out_wrong, inp, w); }) ==
        "linear_bf16_forward: tensor 'out' has shape (2, 3) but (2, 2) was expected");
  CHECK(message_of<shape_error>([&] { linear_bf16_forward(rb, out, inp, w, bias_wrong); }) ==
        "linear_bf16_forward: tensor 'bias' has shape (3) but (2) was expected");
}

#if BLIP2_HAS_ONEDNN
namespace {
// The normalised squared distance sum (a - b)^2 / sum b^2.
template <class A, class B>
double nmse(const A& a, const B& b) {
  double num = 0, den = 0;
  for (index_t k = 0; k < b.size(); ++k) {
    const double d = static_cast<double>(a[k]) - static_cast<double>(b[k]);
    num += d * d;
    den += static_cast<double>(b[k]) * static_cast<double>(b[k]);
  }
  return num / den;
}
}  // namespace

TEST_CASE("onednn linear with bf16 inputs: matches the double reference on rounded inputs, not on the float32 ones") {
  // Oracle: the reference backend in double, fed the inputs rounded to bfloat16 (dbias: from the float32
  // dout, which is a sum and not a matmul). Tolerance NMSE 1e-10: the products of bfloat16 values are
  // exact in float32, so what remains is float32 summation over K = 53 terms (relative ~1e-6 at worst,
  // an NMSE far below 1e-10). The float32 mode must miss the same oracle by much more: rounding an input
  // to 8 significant bits moves it by up to 2^-9 (RMS ~1e-3), an NMSE of ~1e-6 on the outputs.
  const index_t R = 37, K = 53, N = 29;
  std::uint64_t counter = 0;
  auto fill = [&](auto& t) {
    for (index_t k = 0; k < t.size(); ++k) t[k] = 2 * uniform_float(7, counter++) - 1;
  };
  host_tensor<float, 2> inp({R, K}), weight({N, K}), dout({R, N}), dinp0({R, K}), dweight0({N, K});
  host_tensor<float, 1> bias({N}), dbias0({N});
  for (auto* t : {&inp, &weight, &dout, &dinp0, &dweight0}) fill(*t);
  fill(bias);
  fill(dbias0);
  auto widen = [](const auto& t, bool round) {
    auto d = host_tensor<double, std::remove_cvref_t<decltype(t)>::rank>(t.shape());
    for (index_t k = 0; k < t.size(); ++k) d[k] = round ? round_to_bf16(t[k]) : t[k];
    return d;
  };
  // the oracle: out, dinp (accumulated onto dinp0), dweight (onto dweight0), dbias (onto dbias0)
  reference_backend rb;
  host_tensor<double, 2> out_r({R, N}), dinp_r = widen(dinp0, false), dweight_r = widen(dweight0, false);
  host_tensor<double, 1> dbias_r = widen(dbias0, false), dbias_unused = widen(dbias0, false);
  const auto inp_b = widen(inp, true), weight_b = widen(weight, true), dout_b = widen(dout, true);
  linear_forward(rb, out_r, inp_b, weight_b, widen(bias, false));
  linear_backward(rb, dinp_r, dweight_r, dbias_unused, dout_b, inp_b, weight_b, grad_write::accumulate);
  linear_backward(rb, host_tensor<double, 2>({R, K}), host_tensor<double, 2>({N, K}), dbias_r, widen(dout, false),
                  inp_b, weight_b);

  struct result {
    host_tensor<float, 2> out, dinp, dweight, out_broadcast_bias, dinp_reversed, dweight_fallback, dweight_no_dinp;
    host_tensor<float, 1> dbias, dbias_fallback;
  };
  auto run = [&](onednn_backend::linear_precision p) {
    onednn_backend be;
    be.set_linear(p);
    result r{host_tensor<float, 2>({R, N}), dinp0, dweight0, host_tensor<float, 2>({R, N}), dinp0, dweight0, dweight0,
             dbias0, dbias0};
    linear_forward(be, r.out, inp, weight, bias);
    linear_backward(be, r.dinp, r.dweight, r.dbias, dout, inp, weight, grad_write::accumulate);
    // a bias broadcast from one element (stride 0) takes the reference fallback: it must round too
    linear_forward(be, r.out_broadcast_bias, inp, weight, tensor_view<const float, 1>(bias.view().data(), {N}, {0}));
    // dinp written through a view with its rows reversed (a negative stride): the backward's fallback,
    // assigned this time
    tensor_view<float, 2> reversed(r.dinp_reversed.view().data() + (R - 1) * K, {R, K}, {-K, 1});
    linear_backward(be, reversed, r.dweight_fallback, r.dbias_fallback, dout, inp, weight);
    // no dinp (a first layer): only dweight
    linear_backward(be, tensor_view<float, 2>{}, r.dweight_no_dinp, dout, inp, weight);
    return r;
  };
  const result bf = run(onednn_backend::linear_precision::bf16), f32 = run(onednn_backend::linear_precision::f32);
  CHECK(nmse(bf.out, out_r) <= 1e-10);
  CHECK(nmse(bf.dinp, dinp_r) <= 1e-10);
  CHECK(nmse(bf.dweight, dweight_r) <= 1e-10);
  CHECK(nmse(bf.dbias, dbias_r) <= 1e-12);
  host_tensor<double, 2> out_bb({R, N});
  host_tensor<double, 1> bias0({N}, static_cast<double>(bias[0]));
  linear_forward(rb, out_bb, inp_b, weight_b, bias0);
  CHECK(nmse(bf.out_broadcast_bias, out_bb) <= 1e-10);
  host_tensor<double, 2> dinp_assigned({R, K}), dinp_reversed({R, K});
  linear_backward(rb, dinp_assigned, host_tensor<double, 2>({N, K}), dout_b, inp_b, weight_b);
  for (index_t r = 0; r < R; ++r)
    for (index_t k = 0; k < K; ++k) dinp_reversed(R - 1 - r, k) = dinp_assigned(r, k);
  CHECK(nmse(bf.dinp_reversed, dinp_reversed) <= 1e-10);
  CHECK(nmse(bf.dweight_fallback, dweight_r) <= 1e-10);
  CHECK(nmse(bf.dbias_fallback, dbias_r) <= 1e-12);
  CHECK(nmse(bf.dweight_no_dinp, dweight_r) <= 1e-10);
  // the float32 mode is far from the rounded oracle (so the check above can tell the modes apart)
  for (double d : {nmse(f32.out, out_r), nmse(f32.dinp, dinp_r), nmse(f32.dweight, dweight_r),
                   nmse(f32.dinp_reversed, dinp_reversed), nmse(f32.dweight_no_dinp, dweight_r)}) {
    CAPTURE(d);
    CHECK(d >= 1e-8);
  }
  CHECK(nmse(f32.dbias, dbias_r) <= 1e-12);  // dbias is the same float32 sum in both modes
}
#endif
