// Finite-difference checks for the blocks (blocks/attention_block.hpp, feed_forward_block.hpp): every
// combination a model uses, against the same harness as the ops. The Q-Former's own check
// (test_qformer_gradcheck.cpp) covers post-LN blocks inside a model; these cover pre-LN (ViT, OPT),
// ReLU, causal masks over a KV cache with earlier positions, packed plans, and frozen weights (g null:
// only the input's gradient).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "blip2/blocks/attention_block.hpp"
#include "blip2/blocks/feed_forward_block.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

namespace blocks_detail {

// the weights (or, with prefix "d", their gradients) of an attention block from named buffers
inline attention_weights<double> attention_of(io<double>& x, const std::string& p = "") {
  attention_weights<double> w;
  w.query = {x.out<2>(p + "wq"), x.out<1>(p + "bq")};
  w.key = {x.out<2>(p + "wk"), x.out<1>(p + "bk")};
  w.value = {x.out<2>(p + "wv"), x.out<1>(p + "bv")};
  w.dense = {x.out<2>(p + "wd"), x.out<1>(p + "bd")};
  w.norm = {x.out<1>(p + "lnw"), x.out<1>(p + "lnb")};
  return w;
}
inline feed_forward_weights<double> feed_forward_of(io<double>& x, const std::string& p = "") {
  feed_forward_weights<double> w;
  w.intermediate = {x.out<2>(p + "w1"), x.out<1>(p + "b1")};
  w.output = {x.out<2>(p + "w2"), x.out<1>(p + "b2")};
  w.norm = {x.out<1>(p + "lnw"), x.out<1>(p + "lnb")};
  return w;
}
inline void make_attention_weights(io<double>& x, rng& r, index_t C, index_t E) {
  for (const char* n : {"wq", "wd"}) x.make(n, {C, C}, r.normals(0.5));
  for (const char* n : {"wk", "wv"}) x.make(n, {C, E}, r.normals(0.5));
  for (const char* n : {"bq", "bk", "bv", "bd", "lnb"}) x.make(n, {C}, r.normals(0.1));
  x.make("lnw", {C}, [&](index_t) { return 1.0 + 0.2 * r.normal(1.0); });
}
inline const std::vector<std::string> attention_params = {"wq", "bq", "wk", "bk", "wv", "bv", "wd", "bd", "lnw", "lnb"};

// Everything a self-attention block call needs besides the weights, rebuilt on every forward.
struct self_attention_run {
  index_t B, L, C, NH, P, keep_out;  // P earlier cached positions; keep_out: output positions (<= L)
  bool skip;                         // pack: leave out rows with key_padding 0 (they are read by nobody)
  attention_block_options o;
  std::vector<double> storage;
  row_plan<> plan;
  attention_block_state<double> st;
  block_scratch<double> sc;
  kv_cache<double> prefix, cache;

  // keep(b, p): the row is computed; the key padding is on this pass's own positions only
  bool kept(io<double>& x, index_t b, index_t p) const { return !skip || x.in<2>("pad")(b, P + p) != 0; }

  void forward(reference_backend& be, io<double>& x, bool causal_mask) {
    plan = skip ? row_plan<>(B, L, keep_out, [&](index_t b, index_t p) { return kept(x, b, p); })
                : row_plan<>(B, L, keep_out);
    const index_t S = P + L, Lp = plan.rows(), n = plan.out_rows(true);
    lay_out(storage, [&](auto& a) {
      attention_block_layout(a, st, o.norm, B, Lp, n, keep_out, S, C, NH);
      sc.lay_out(a, B, L, S, Lp, C, C, plan.packed());
      prefix.lay_out(a, B, P, C, true);
      cache.lay_out(a, B, S, C, false);
    });
    // the earlier positions' keys and values, as another pass would have left them
    prefix.append(be, P);
    copy(be, prefix.k_rows(0, P), x.in<2>("pk"));
    copy(be, prefix.v_rows(0, P), x.in<2>("pv"));
    if (P > 0) cache.fork_from(be, prefix);
    auto w = attention_of(x);
    auto xs = packed_input(be, x);
    if (causal_mask)
      self_attention_forward(be, w, st, sc, xs, plan, cache, causal{P}, x.in<2>("pad"), o);
    else
      self_attention_forward(be, w, st, sc, xs, plan, cache, bidirectional{}, x.in<2>("pad"), o);
    // out: the computed output rows in the attention layout (skipped rows 0)
    auto out = x.out<2>("out");
    fill(be, out, 0.0);
    if (plan.packed())
      plan.unpack(be, row_range(out, 0, keep_out * B), detail::as_const(st.out));
    else
      copy(be, row_range(out, 0, n), st.out);
  }
  // x in the attention layout -> the computed rows
  tensor_view<const double, 2> packed_input(reference_backend& be, io<double>& x) {
    if (!plan.packed()) return x.in<2>("x");
    xp.assign(static_cast<std::size_t>(plan.rows() * C), 0.0);
    const tensor_view<double, 2> v(xp.data(), {plan.rows(), C});
    plan.pack(be, v, x.in<2>("x"));
    return detail::as_const(v);
  }
  void backward(reference_backend& be, io<double>& x, bool causal_mask, bool frozen) {
    const index_t Lp = plan.rows(), n = plan.out_rows(true);
    auto w = attention_of(x);
    const auto g = frozen ? attention_weights<double>{} : attention_of(x, "d");
    std::vector<double> dout_rows(static_cast<std::size_t>(n * C)), dx_rows(static_cast<std::size_t>(Lp * C));
    const tensor_view<double, 2> dout(dout_rows.data(), {n, C}), dx(dx_rows.data(), {Lp, C});
    if (plan.packed())
      plan.pack(be, dout, row_range(x.in<2>("dout"), 0, L * B));
    else
      copy(be, dout, row_range(x.in<2>("dout"), 0, n));
    auto xs = packed_input(be, x);
    auto call = [&](const auto& mask) {
      self_attention_backward(be, w, frozen ? nullptr : &g, st, sc, xs, detail::as_const(dout), dx, plan, cache, mask,
                              x.in<2>("pad"), o);
    };
    if (causal_mask)
      call(causal{P});
    else
      call(bidirectional{});
    if (plan.packed())
      plan.unpack(be, x.out<2>("dx"), detail::as_const(dx));
    else
      copy(be, x.out<2>("dx"), dx);
    if (P > 0) {  // the earlier positions' gradients went back to the cache they came from
      copy(be, x.out<2>("dpk"), prefix.dk_rows(0, P));
      copy(be, x.out<2>("dpv"), prefix.dv_rows(0, P));
    }
  }
  std::vector<double> xp;
};

}  // namespace blocks_detail

inline void add_block_grads(std::vector<grad_case>& cases) {
  using namespace blocks_detail;
  // ---- self-attention: pre-LN causal over earlier cached positions (a decoder), post-LN packed and
  // truncated (the Q-Former's text rows), each with and without parameter gradients ----
  struct sa { const char* name; norm_placement norm; bool causal; index_t P; bool skip; index_t keep_out; bool frozen; double p; };
  for (const sa& s : {sa{"pre-LN causal, 2 cached positions", norm_placement::pre, true, 2, false, 3, false, 0.0},
                      sa{"pre-LN causal, dropout", norm_placement::pre, true, 0, false, 3, false, 0.2},
                      sa{"pre-LN causal, frozen", norm_placement::pre, true, 2, false, 3, true, 0.0},
                      sa{"post-LN bidirectional, packed, 2 of 3 output", norm_placement::post, false, 0, true, 2, false, 0.2},
                      sa{"post-LN bidirectional, frozen", norm_placement::post, false, 0, false, 3, true, 0.0}}) {
    const index_t B = 2, L = 3, C = 4, NH = 2, P = s.P, S = P + L;
    auto run = std::make_shared<self_attention_run>();
    run->B = B, run->L = L, run->C = C, run->NH = NH, run->P = P, run->keep_out = s.keep_out, run->skip = s.skip;
    run->o.num_heads = NH, run->o.norm = s.norm, run->o.layer_norm_eps = 1e-5;
    run->o.attention_dropout = run->o.hidden_dropout = s.p, run->o.probs_seed = 7, run->o.out_seed = 8;
    grad_case g;
    g.desc = std::string("self_attention_block ") + s.name;
    g.init = [=](io<double>& x) {
      rng r(31 + P);
      x.make("x", {L * B, C}, r.normals());
      x.make("pk", {P * B, C}, r.normals());
      x.make("pv", {P * B, C}, r.normals());
      // key padding (B, S): the last position of element 1 is padding (so a packed plan skips its row)
      x.make("pad", {B, S}, [=](index_t i) { return i == B * S - 1 ? 0.0 : 1.0; });
      make_attention_weights(x, r, C, C);
      x.make("out", {L * B, C}, [](index_t) { return 0.0; });
    };
    g.wrt = {"x"};
    if (P > 0) g.wrt.insert(g.wrt.end(), {"pk", "pv"});
    if (!s.frozen) g.wrt.insert(g.wrt.end(), attention_params.begin(), attention_params.end());
    g.outputs = {"out"};
    g.forward = [run, s](reference_backend& be, io<double>& x) { run->forward(be, x, s.causal); };
    g.backward = [run, s](reference_backend& be, io<double>& x) { run->backward(be, x, s.causal, s.frozen); };
    cases.push_back(std::move(g));
  }

  // ---- cross-attention, pre-LN (keys and values given; their gradients added) ----
  for (bool frozen : {false, true}) {
    const index_t B = 2, Tq = 2, N = 3, C = 4, E = 5, NH = 2;
    grad_case g;
    g.desc = std::string("cross_attention_block pre-LN") + (frozen ? ", frozen" : "");
    auto storage = std::make_shared<std::vector<double>>();
    auto st = std::make_shared<attention_block_state<double>>();
    auto sc = std::make_shared<block_scratch<double>>();
    attention_block_options o;
    o.num_heads = NH, o.norm = norm_placement::pre, o.layer_norm_eps = 1e-5;
    g.init = [=](io<double>& x) {
      rng r(77);
      x.make("x", {Tq * B, C}, r.normals());
      x.make("img", {B, N, E}, r.normals());
      make_attention_weights(x, r, C, E);
      x.make("out", {Tq * B, C}, [](index_t) { return 0.0; });
    };
    // keys, values = img Wk, img Wv here, so that the check covers their gradients too
    auto kv = std::make_shared<std::vector<double>>();
    g.wrt = {"x", "img"};
    if (!frozen) g.wrt.insert(g.wrt.end(), attention_params.begin(), attention_params.end());
    g.outputs = {"out"};
    g.forward = [=](reference_backend& be, io<double>& x) {
      lay_out(*storage, [&](auto& a) {
        attention_block_layout(a, *st, o.norm, B, Tq * B, Tq * B, Tq, N, C, NH);
        sc->lay_out(a, B, Tq, N, Tq * B, C, C, false);
      });
      kv->assign(static_cast<std::size_t>(4 * B * N * C), 0.0);
      const tensor_view<double, 2> k(kv->data(), {B * N, C}), v(kv->data() + B * N * C, {B * N, C});
      const auto img = tensor_view<const double, 2>(x.in<3>("img").data(), {B * N, E});
      linear_forward(be, k, img, x.in<2>("wk"), x.in<1>("bk"));
      linear_forward(be, v, img, x.in<2>("wv"), x.in<1>("bv"));
      cross_attention_forward(be, attention_of(x), *st, x.in<2>("x"), detail::as_const(tensor_view<double, 3>(k.data(), {B, N, C})),
                              detail::as_const(tensor_view<double, 3>(v.data(), {B, N, C})), o);
      copy(be, x.out<2>("out"), st->out);
    };
    g.backward = [=](reference_backend& be, io<double>& x) {
      double* base = kv->data();
      const tensor_view<double, 3> k(base, {B, N, C}), v(base + B * N * C, {B, N, C});
      const tensor_view<double, 3> dk(base + 2 * B * N * C, {B, N, C}), dv(base + 3 * B * N * C, {B, N, C});
      auto w = attention_of(x);
      const auto gw = frozen ? attention_weights<double>{} : attention_of(x, "d");
      cross_attention_backward(be, w, frozen ? nullptr : &gw, *st, *sc, x.in<2>("x"), x.in<2>("dout"), x.out<2>("dx"),
                               detail::as_const(k), detail::as_const(v), dk, dv, grad_write::assign, o);
      // k = img Wk + bk, v = img Wv + bv: the image's gradient (the key/value weights' too unless frozen)
      const auto img = tensor_view<const double, 2>(x.in<3>("img").data(), {B * N, E});
      const auto dimg = tensor_view<double, 2>(x.out<3>("dimg").data(), {B * N, E});
      const auto gk = frozen ? linear_weights<double>{} : gw.key, gv = frozen ? linear_weights<double>{} : gw.value;
      linear_backward(be, dimg, gk.weight, gk.bias, detail::as_const(flat_rows(dk)), img, x.in<2>("wk"));
      linear_backward(be, dimg, gv.weight, gv.bias, detail::as_const(flat_rows(dv)), img, x.in<2>("wv"),
                      grad_write::accumulate);
    };
    cases.push_back(std::move(g));
  }

  // ---- feed-forward: pre-LN ReLU with dropout (OPT), post-LN GELU (BERT), over a range of rows ----
  struct ff { const char* name; norm_placement norm; activation act; double p; bool frozen; };
  for (const ff& f : {ff{"pre-LN relu, dropout", norm_placement::pre, activation::relu, 0.2, false},
                      ff{"post-LN gelu", norm_placement::post, activation::gelu, 0.0, false},
                      ff{"pre-LN relu, frozen", norm_placement::pre, activation::relu, 0.0, true},
                      ff{"post-LN gelu, frozen, dropout", norm_placement::post, activation::gelu, 0.2, true}}) {
    const index_t n = 7, r0 = 2, r1 = 6, C = 4, F = 6;  // the block runs on rows [r0, r1) of a state of n
    grad_case g;
    g.desc = std::string("feed_forward_block ") + f.name + ", rows [2, 6) of 7";
    auto storage = std::make_shared<std::vector<double>>();
    auto st = std::make_shared<feed_forward_state<double>>();
    auto sc = std::make_shared<block_scratch<double>>();
    feed_forward_options o;
    o.norm = f.norm, o.act = f.act, o.layer_norm_eps = 1e-5, o.hidden_dropout = f.p, o.seed = 5;
    g.init = [=](io<double>& x) {
      rng r(5);
      x.make("x", {r1 - r0, C}, r.normals());
      x.make("w1", {F, C}, r.normals(0.7));
      x.make("w2", {C, F}, r.normals(0.7));
      for (const char* nm : {"b1"}) x.make(nm, {F}, r.normals(0.3));
      for (const char* nm : {"b2", "lnb"}) x.make(nm, {C}, r.normals(0.1));
      x.make("lnw", {C}, [&](index_t) { return 1.0 + 0.2 * r.normal(1.0); });
      x.make("out", {r1 - r0, C}, [](index_t) { return 0.0; });
    };
    g.wrt = {"x"};
    if (!f.frozen) g.wrt.insert(g.wrt.end(), {"w1", "b1", "w2", "b2", "lnw", "lnb"});
    g.outputs = {"out"};
    g.forward = [=](reference_backend& be, io<double>& x) {
      lay_out(*storage, [&](auto& a) {
        feed_forward_layout(a, *st, o.norm, n, C, F);
        sc->lay_out(a, 1, n, n, n, C, F, false);
      });
      feed_forward_forward(be, feed_forward_of(x), *st, r0, r1, x.in<2>("x"), o);
      copy(be, x.out<2>("out"), row_range(st->out, r0, r1));
    };
    g.backward = [=](reference_backend& be, io<double>& x) {
      const auto gw = f.frozen ? feed_forward_weights<double>{} : feed_forward_of(x, "d");
      feed_forward_backward(be, feed_forward_of(x), f.frozen ? nullptr : &gw, *st, *sc, r0, r1, x.in<2>("x"),
                            x.in<2>("dout"), x.out<2>("dx"), o);
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing

namespace blip2::testing {

// A decoder's KV cache: prefilling a prompt and then decoding one position per step through the same
// cache must give every position exactly the output of one causal pass over the whole sequence
// (pre-LN, causal{P}). Returns the largest |difference| over the outputs.
inline double kv_cache_decode_difference() {
  reference_backend be;
  const index_t B = 2, L = 5, C = 4, NH = 2, prompt = 2;
  io<double> x;
  rng r(3);
  x.make("x", {L * B, C}, r.normals());
  blocks_detail::make_attention_weights(x, r, C, C);
  auto w = blocks_detail::attention_of(x);
  attention_block_options o;
  o.num_heads = NH, o.norm = norm_placement::pre, o.layer_norm_eps = 1e-5;
  // one causal pass over all L positions
  std::vector<double> full_storage, step_storage;
  attention_block_state<double> full, step;
  block_scratch<double> sc;
  kv_cache<double> cache;
  const row_plan<> all(B, L, L);
  lay_out(full_storage, [&](auto& a) {
    attention_block_layout(a, full, o.norm, B, L * B, L * B, L, L, C, NH);
    cache.lay_out(a, B, L, C, false);
  });
  self_attention_forward(be, w, full, sc, x.in<2>("x"), all, cache, causal{0}, no_padding, o);
  std::vector<double> want(full.out.data(), full.out.data() + L * B * C);
  // the prompt in one call, then one position per call, all appending to one cache
  cache.len = 0;
  double worst = 0;
  for (index_t p0 = 0; p0 < L; p0 = p0 == 0 ? prompt : p0 + 1) {
    const index_t n = p0 == 0 ? prompt : 1, P = cache.length();
    const row_plan<> plan(B, n, n);
    lay_out(step_storage, [&](auto& a) { attention_block_layout(a, step, o.norm, B, n * B, n * B, n, P + n, C, NH); });
    self_attention_forward(be, w, step, sc, row_range(x.in<2>("x"), p0 * B, (p0 + n) * B), plan, cache, causal{P},
                           no_padding, o);
    for (index_t i = 0; i < n * B * C; ++i)
      worst = std::max(worst, std::abs(step.out.data()[i] - want[static_cast<std::size_t>(p0 * B * C + i)]));
  }
  return cache.length() == L ? worst : 1e300;
}

}  // namespace blip2::testing
