// blip2/blocks/attention_block.hpp: a multi-head attention sublayer with its residual and LayerNorm,
// forward and backward, self-attention (keys from the block's own rows, through a kv_cache) or
// cross-attention (keys and values given).
//
// Dimensions: B batch, L positions of the pass, Lp computed rows (row_plan), n rows the block outputs
//             (Lp, or fewer in a truncated last layer), Tq positions they cover, P positions already in
//             the cache, S = P + L keys, C hidden, NH heads, N cross-attention keys per batch element.
//
//   post-LN (BERT, the Q-Former):  out = LayerNorm(dropout(attention(x Wq, keys, values) Wd + bd) + x)
//   pre-LN (ViT, OPT):             out = x + dropout(attention(a Wq, keys, values) Wd + bd), a = LayerNorm(x)
//   self-attention:  keys, values = (a or x) Wk + bk, (a or x) Wv + bv of every computed row, appended to
//                    the cache; queries attend to all S cached positions (the mask says which)
//   cross-attention: keys, values given as (B, N, C); all n rows are queries
// The probabilities get attention dropout (seed probs_seed), the dense output hidden dropout (out_seed).
//
// Rows are dense (n or Lp, C); attention runs in the attention layout, where the row plan scatters the
// projections (unpack) and gathers the output back (pack) when it skips rows.
//
// Backward: dx (Lp, C) is ASSIGNED (rows the block did not output get only their K/V terms);
// parameter gradients are ADDED into g, or not computed at all when g is null (a frozen layer).
// The cache: gradients of keys at earlier positions are ADDED to the dk/dv of the cache that computed them;
// gradients that later blocks added to this block's own cached rows are read back.
#pragma once
#include <cstdint>

#include "blip2/blocks/apply_linear.hpp"
#include "blip2/blocks/kv_cache.hpp"
#include "blip2/blocks/row_plan.hpp"
#include "blip2/blocks/weights.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/core/mask_policy.hpp"
#include "blip2/nn/attention.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/dropout.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"

namespace blip2 {

enum class norm_placement { pre, post };

struct attention_block_options {
  index_t num_heads = 1;
  norm_placement norm = norm_placement::post;
  double layer_norm_eps = 1e-12;
  double attention_dropout = 0.0;  // on the probabilities
  double hidden_dropout = 0.0;     // on the dense output
  std::uint64_t probs_seed = 0, out_seed = 0;
};

// What one block keeps for backward (views into the caller's arena; attention_block_layout sizes them).
template <class T, memory_space S = host_space>
struct attention_block_state {
  index_t rows_in = 0, rows_out = 0;  // Lp rows read, n rows output
  index_t positions_out = 0;          // Tq
  index_t first_position = 0;         // P: where this block's keys start in the cache (self-attention)
  tensor_view<T, 2, S> normed;        // (Lp, C) pre-LN: LayerNorm(x)
  tensor_view<T, 1, S> in_mean, in_rstd;  // (Lp)
  tensor_view<T, 2, S> q;             // (Tq B, C) attention layout
  tensor_view<T, 4, S> probs;         // (B, NH, Tq, S)
  tensor_view<T, 2, S> ctx;           // (n, C)
  tensor_view<T, 2, S> sum;           // (n, C) post-LN: the residual sum before the LayerNorm
  tensor_view<T, 2, S> out;           // (n, C)
  tensor_view<T, 1, S> mean, rstd;    // (n) post-LN
};

// Scratch shared by every block of a pass (sized for the largest; nothing in it outlives one call).
template <class T, memory_space S = host_space>
struct block_scratch {
  tensor_view<T, 2, S> rows;          // (Lp, C) a projection of packed rows before it is scattered
  tensor_view<T, 2, S> att;           // (L B, C) attention output in the attention layout (packed plans)
  tensor_view<T, 2, S> d_sum, d_tmp, d_ctx;  // (Lp, C)
  tensor_view<T, 2, S> d_q;           // (L B, C)
  tensor_view<T, 2, S> d_k, d_v;      // (S B, C) self-attention; cross-attention uses d_cq
  tensor_view<T, 2, S> d_pq, d_pk, d_pv;  // (Lp, C) packed gradients of q, k, v (packed plans)
  tensor_view<T, 2, S> d_f, d_f2;     // (Lp, F) feed-forward

  // Views for a pass of Lp computed rows, L positions (S keys at most), width C, feed-forward width F.
  template <class Carver>
  void lay_out(Carver& a, index_t B, index_t L, index_t S_max, index_t Lp, index_t C, index_t F, bool packed) {
    rows = att = d_pq = d_pk = d_pv = {};
    if (packed) {
      rows = a.template take<2>({Lp, C});
      att = a.template take<2>({L * B, C});
      d_pq = a.template take<2>({Lp, C});
      d_pk = a.template take<2>({Lp, C});
      d_pv = a.template take<2>({Lp, C});
    }
    d_sum = a.template take<2>({Lp, C});
    d_tmp = a.template take<2>({Lp, C});
    d_ctx = a.template take<2>({Lp, C});
    d_q = a.template take<2>({L * B, C});
    d_k = a.template take<2>({S_max * B, C});
    d_v = a.template take<2>({S_max * B, C});
    d_f = a.template take<2>({Lp, F});
    d_f2 = a.template take<2>({Lp, F});
  }
};

namespace detail {
// pre-LN blocks keep LayerNorm(x) and its statistics for backward: (rows, C), (rows), (rows)
template <class Carver, class V2, class V1>
void lay_out_input_norm(Carver& a, norm_placement norm, V2& normed, V1& mean, V1& rstd, index_t rows, index_t C) {
  if (norm != norm_placement::pre) return;
  normed = a.template take<2>({rows, C});
  mean = a.template take<1>({rows});
  rstd = a.template take<1>({rows});
}
}  // namespace detail

// The state's views: self-attention over a plan (rows Lp, output n = plan.out_rows(last)), S keys.
template <class T, memory_space S, class Carver>
void attention_block_layout(Carver& a, attention_block_state<T, S>& st, norm_placement norm, index_t B,
                            index_t rows_in, index_t rows_out, index_t positions_out, index_t keys, index_t C,
                            index_t NH) {
  st = {};
  st.rows_in = rows_in, st.rows_out = rows_out, st.positions_out = positions_out;
  detail::lay_out_input_norm(a, norm, st.normed, st.in_mean, st.in_rstd, rows_in, C);
  st.q = a.template take<2>({positions_out * B, C});
  st.probs = a.template take<4>({B, NH, positions_out, keys});
  st.ctx = a.template take<2>({rows_out, C});
  if (norm == norm_placement::post) {
    st.sum = a.template take<2>({rows_out, C});
    st.mean = a.template take<1>({rows_out});
    st.rstd = a.template take<1>({rows_out});
  }
  st.out = a.template take<2>({rows_out, C});
}

namespace detail {

template <class T, memory_space S>
linear_weights<T, S> grads_or_none(const linear_weights<T, S>* g) {
  return g ? *g : linear_weights<T, S>{};
}
template <class T, memory_space S>
layer_norm_weights<T, S> grads_or_none(const layer_norm_weights<T, S>* g) {
  return g ? *g : layer_norm_weights<T, S>{};
}

// pre-LN: a = LayerNorm(x) (the projections' input); post-LN: x itself
template <backend Be, class T, memory_space S>
tensor_view<const T, 2, S> block_input(Be& be, tensor_view<const T, 2, S> x, tensor_view<T, 2, S> normed,
                                       tensor_view<T, 1, S> mean, tensor_view<T, 1, S> rstd,
                                       const layer_norm_weights<T, S>& norm, norm_placement where, double eps) {
  if (where == norm_placement::post) return x;
  layer_norm_forward(be, normed, layer_norm_cache<T, S>{mean, rstd}, x, norm.weight, norm.bias, eps);
  return as_const(normed);
}

// d(block input): pre-LN adds dx += LayerNorm backward of d(a) (held in da); post-LN: nothing to do
template <backend Be, class T, memory_space S>
void block_input_backward(Be& be, tensor_view<T, 2, S> dx, tensor_view<const T, 2, S> da, tensor_view<const T, 2, S> x,
                          tensor_view<T, 1, S> mean, tensor_view<T, 1, S> rstd, const layer_norm_weights<T, S>& norm,
                          const layer_norm_weights<T, S>* gnorm, norm_placement where) {
  if (where == norm_placement::post) return;
  const auto g = grads_or_none(gnorm);
  layer_norm_backward(be, dx, g.weight, g.bias, da, x, norm.weight, layer_norm_cache<T, S>{mean, rstd},
                      grad_write::accumulate);
}

// out = LayerNorm(dropout(ctx Wd + bd) + x) (post) or x + dropout(ctx Wd + bd) (pre); rows [0, n)
template <backend Be, class T, memory_space S>
void block_output_forward(Be& be, const attention_weights<T, S>& w, attention_block_state<T, S>& st,
                          tensor_view<const T, 2, S> x, const attention_block_options& o) {
  auto sum = o.norm == norm_placement::post ? st.sum : st.out;  // (n, C)
  apply_linear(be, sum, detail::as_const(st.ctx), w.dense);
  if (o.hidden_dropout > 0) dropout_forward(be, sum, sum, o.hidden_dropout, o.out_seed);
  axpy(be, sum, x);
  if (o.norm == norm_placement::post)
    layer_norm_forward(be, st.out, layer_norm_cache<T, S>{st.mean, st.rstd}, sum, w.norm.weight, w.norm.bias,
                       o.layer_norm_eps);
}

// From dout (n, C): dx rows [0, n) = the residual's term (assigned); d(ctx) into sc.d_ctx rows [0, n)
template <backend Be, class T, memory_space S>
void block_output_backward(Be& be, const attention_weights<T, S>& w, const attention_weights<T, S>* g,
                           attention_block_state<T, S>& st, block_scratch<T, S>& sc, tensor_view<const T, 2, S> dout,
                           tensor_view<T, 2, S> dx, const attention_block_options& o) {
  const index_t n = st.rows_out;
  // d(sum): through the LayerNorm (post-LN), or dout itself (pre-LN: out = sum)
  tensor_view<const T, 2, S> dsum = dout;
  if (o.norm == norm_placement::post) {
    // out = layer_norm(sum)
    const auto gn = grads_or_none(g ? &g->norm : nullptr);
    layer_norm_backward(be, row_range(sc.d_sum, 0, n), gn.weight, gn.bias, dout, st.sum, w.norm.weight,
                        layer_norm_cache<T, S>{st.mean, st.rstd});
    dsum = as_const(row_range(sc.d_sum, 0, n));
  }
  // sum = dropout(ctx Wd + bd) + x: the residual passes d(sum) to x
  copy(be, row_range(dx, 0, n), dsum);
  tensor_view<const T, 2, S> ddense = dsum;
  if (o.hidden_dropout > 0) {
    dropout_backward(be, row_range(sc.d_tmp, 0, n), dsum, o.hidden_dropout, o.out_seed);
    ddense = as_const(row_range(sc.d_tmp, 0, n));
  }
  // ctx Wd + bd
  const auto gd = grads_or_none(g ? &g->dense : nullptr);
  linear_backward(be, row_range(sc.d_ctx, 0, n), gd.weight, gd.bias, ddense, st.ctx, w.dense.weight);
}

}  // namespace detail

// ---- self-attention ----------------------------------------------------------------------------------

// st.out (n, C) from x (Lp, C); appends this pass's L positions of keys and values to cache. The mask is
// over (Tq rows, S = P + L keys) with P = cache.length() before the call; key_padding is (B, S) or
// no_padding.
template <backend Be, class T, memory_space S, mask_policy Mask, class Pad>
void self_attention_forward(Be& be, const attention_weights<T, S>& w, attention_block_state<T, S>& st,
                            block_scratch<T, S>& sc, tensor_view<const T, 2, S> x, const row_plan<S>& plan,
                            kv_cache<T, S>& cache, const Mask& mask, Pad&& key_padding,
                            const attention_block_options& o) {
  const index_t B = plan.batch(), L = plan.positions(), n = st.rows_out, Tq = st.positions_out;
  const auto a = detail::block_input(be, x, st.normed, st.in_mean, st.in_rstd, w.norm, o.norm, o.layer_norm_eps);
  const index_t P = cache.append(be, L);
  st.first_position = P;
  // q, k, v = a Wq + bq, a Wk + bk, a Wv + bv: q of the n output rows, k and v of every row, each into
  // the attention layout (scattered through the plan when it skips rows)
  auto project = [&](tensor_view<T, 2, S> dst, index_t rows, const linear_weights<T, S>& lw) {
    if (!plan.packed()) return apply_linear(be, dst, row_range(a, 0, rows), lw);
    auto tmp = row_range(sc.rows, 0, rows);
    apply_linear(be, tmp, row_range(a, 0, rows), lw);
    plan.unpack(be, dst, detail::as_const(tmp));
  };
  project(st.q, n, w.query);                         // (Tq B, C)
  project(cache.k_rows(P, P + L), plan.rows(), w.key);    // (L B, C)
  project(cache.v_rows(P, P + L), plan.rows(), w.value);  // (L B, C)
  // ctx = attention(q, keys, values) under the mask and the key padding
  auto ctx_att = plan.packed() ? row_range(sc.att, 0, Tq * B) : st.ctx;
  attention_forward(be, by_batch(ctx_att, B), attention_cache<T, S>{st.probs}, by_batch(st.q, B), cache.keys(P + L),
                    cache.values(P + L), o.num_heads, mask, key_padding, o.attention_dropout, o.probs_seed);
  if (plan.packed()) plan.pack(be, st.ctx, detail::as_const(ctx_att));
  detail::block_output_forward(be, w, st, row_range(x, 0, n), o);
}

// dx (Lp, C) assigned from dout (n, C); g += (unless null); the cache's dk/dv of earlier positions +=.
template <backend Be, class T, memory_space S, mask_policy Mask, class Pad>
void self_attention_backward(Be& be, const attention_weights<T, S>& w, const attention_weights<T, S>* g,
                             attention_block_state<T, S>& st, block_scratch<T, S>& sc, tensor_view<const T, 2, S> x,
                             tensor_view<const T, 2, S> dout, tensor_view<T, 2, S> dx, const row_plan<S>& plan,
                             kv_cache<T, S>& cache, const Mask& mask, Pad&& key_padding,
                             const attention_block_options& o) {
  const index_t B = plan.batch(), L = plan.positions(), Lp = plan.rows(), n = st.rows_out, Tq = st.positions_out;
  const index_t P = st.first_position, Sk = P + L;
  // out = ... + x, and d(ctx)
  detail::block_output_backward(be, w, g, st, sc, dout, dx, o);
  if (n < Lp) fill(be, row_range(dx, n, Lp), T{});  // rows without output get only their K/V terms
  // ctx = attention(q, keys, values), in the attention layout
  auto dctx = row_range(sc.d_ctx, 0, n);
  if (plan.packed()) {
    dctx = row_range(sc.att, 0, Tq * B);
    plan.unpack(be, dctx, detail::as_const(row_range(sc.d_ctx, 0, n)));
  }
  auto dq = row_range(sc.d_q, 0, Tq * B), dk = row_range(sc.d_k, 0, Sk * B), dv = row_range(sc.d_v, 0, Sk * B);
  attention_backward(be, by_batch(dq, B), by_batch(dk, B), by_batch(dv, B), by_batch(detail::as_const(dctx), B),
                     by_batch(detail::as_const(st.q), B), detail::as_const(cache.keys(Sk)),
                     detail::as_const(cache.values(Sk)), attention_cache<T, S>{st.probs}, o.num_heads, mask,
                     key_padding, o.attention_dropout, o.probs_seed);
  // keys of earlier positions belong to the block that appended them: their gradient goes back there
  if (P > 0) {
    auto& owner = cache.owner_of_prefix();
    BLIP2_CHECK(owner.dk.data() != nullptr, value_error,
                "self_attention_backward: the cache of the earlier positions keeps no gradients");
    axpy(be, owner.dk_rows(0, P), row_range(dk, 0, P * B));
    axpy(be, owner.dv_rows(0, P), row_range(dv, 0, P * B));
  }
  auto dk_own = row_range(dk, P * B, Sk * B), dv_own = row_range(dv, P * B, Sk * B);
  // blocks that attended to this block's keys later (forks, later appends) left their gradient here
  if (cache.dk.data()) {
    axpy(be, dk_own, cache.dk_rows(P, Sk));
    axpy(be, dv_own, cache.dv_rows(P, Sk));
  }
  // q, k, v = a Wq + bq, a Wk + bk, a Wv + bv (their gradients gathered to the computed rows first)
  tensor_view<T, 2, S> dq_rows = dq, dk_rows = dk_own, dv_rows = dv_own;
  if (plan.packed()) {
    dq_rows = row_range(sc.d_pq, 0, n), dk_rows = sc.d_pk, dv_rows = sc.d_pv;
    plan.pack(be, dq_rows, detail::as_const(dq));
    plan.pack(be, dk_rows, detail::as_const(dk_own));
    plan.pack(be, dv_rows, detail::as_const(dv_own));
  }
  // pre-LN: the projections read a = LayerNorm(x); their gradient goes to d(a), then through the norm
  const bool pre = o.norm == norm_placement::pre;
  tensor_view<T, 2, S> da = pre ? row_range(sc.d_sum, 0, Lp) : dx;
  const tensor_view<const T, 2, S> a = pre ? detail::as_const(st.normed) : x;
  if (pre) fill(be, da, T{});
  const auto gq = detail::grads_or_none(g ? &g->query : nullptr);
  const auto gk = detail::grads_or_none(g ? &g->key : nullptr);
  const auto gv = detail::grads_or_none(g ? &g->value : nullptr);
  linear_backward(be, row_range(da, 0, n), gq.weight, gq.bias, detail::as_const(dq_rows), row_range(a, 0, n),
                  w.query.weight, grad_write::accumulate);
  linear_backward(be, da, gk.weight, gk.bias, detail::as_const(dk_rows), a, w.key.weight, grad_write::accumulate);
  linear_backward(be, da, gv.weight, gv.bias, detail::as_const(dv_rows), a, w.value.weight, grad_write::accumulate);
  detail::block_input_backward(be, dx, detail::as_const(da), x, st.in_mean, st.in_rstd, w.norm,
                               g ? &g->norm : nullptr, o.norm);
}

// ---- cross-attention ---------------------------------------------------------------------------------

// st.out (n, C) from x (n, C): every row a query over keys/values (B, N, C), rows sequence-major over B.
template <backend Be, class T, memory_space S>
void cross_attention_forward(Be& be, const attention_weights<T, S>& w, attention_block_state<T, S>& st,
                             tensor_view<const T, 2, S> x, tensor_view<const T, 3, S> keys,
                             tensor_view<const T, 3, S> values, const attention_block_options& o) {
  const index_t B = keys.extent(0);
  const auto a = detail::block_input(be, x, st.normed, st.in_mean, st.in_rstd, w.norm, o.norm, o.layer_norm_eps);
  apply_linear(be, st.q, a, w.query);  // (n, C)
  attention_forward(be, by_batch(st.ctx, B), attention_cache<T, S>{st.probs}, by_batch(detail::as_const(st.q), B),
                    keys, values, o.num_heads, bidirectional{}, no_padding, o.attention_dropout, o.probs_seed);
  detail::block_output_forward(be, w, st, x, o);
}

// dx (n, C) assigned; dkeys, dvalues (B, N, C) assigned or added (mode); g += unless null.
template <backend Be, class T, memory_space S>
void cross_attention_backward(Be& be, const attention_weights<T, S>& w, const attention_weights<T, S>* g,
                              attention_block_state<T, S>& st, block_scratch<T, S>& sc, tensor_view<const T, 2, S> x,
                              tensor_view<const T, 2, S> dout, tensor_view<T, 2, S> dx,
                              tensor_view<const T, 3, S> keys, tensor_view<const T, 3, S> values,
                              tensor_view<T, 3, S> dkeys, tensor_view<T, 3, S> dvalues, grad_write kv_mode,
                              const attention_block_options& o) {
  const index_t B = keys.extent(0), n = st.rows_out;
  detail::block_output_backward(be, w, g, st, sc, dout, dx, o);
  // ctx = attention(q, keys, values); with kv_mode accumulate the mode covers dq too, so start it at 0
  auto dq = row_range(sc.d_q, 0, n);
  if (kv_mode == grad_write::accumulate) fill(be, dq, T{});
  attention_backward(be, by_batch(dq, B), dkeys, dvalues, by_batch(detail::as_const(row_range(sc.d_ctx, 0, n)), B),
                     by_batch(detail::as_const(st.q), B), keys, values, attention_cache<T, S>{st.probs}, o.num_heads,
                     bidirectional{}, no_padding, o.attention_dropout, o.probs_seed, kv_mode);
  // q = a Wq + bq
  const bool pre = o.norm == norm_placement::pre;
  tensor_view<T, 2, S> da = pre ? row_range(sc.d_sum, 0, n) : dx;
  const auto gq = detail::grads_or_none(g ? &g->query : nullptr);
  linear_backward(be, da, gq.weight, gq.bias, detail::as_const(dq), pre ? detail::as_const(st.normed) : x,
                  w.query.weight, pre ? grad_write::assign : grad_write::accumulate);
  detail::block_input_backward(be, dx, detail::as_const(da), x, st.in_mean, st.in_rstd, w.norm,
                               g ? &g->norm : nullptr, o.norm);
}

}  // namespace blip2
