// blip2/blocks/feed_forward_block.hpp: the position-wise feed-forward sublayer with its residual and
// LayerNorm, forward and backward, over a range of rows.
//
// Dimensions: rows [r0, r1) of a state of n rows, C hidden, F inner width.
//   post-LN (BERT, the Q-Former):  out = LayerNorm(dropout(act(x W1 + b1) W2 + b2) + x)
//   pre-LN (ViT, OPT):             out = x + dropout(act(a W1 + b1) W2 + b2),  a = LayerNorm(x)
//   act: exact erf GELU (BERT, ViT) or ReLU (OPT)
// A model whose rows need different weights (the Q-Former's query and text rows) calls the block once
// per range; each range draws its hidden-dropout mask from seed + r0, so two ranges never share one.
// Backward: dx of the range ASSIGNED; parameter gradients ADDED into g, or skipped when g is null.
#pragma once
#include <cstdint>

#include "blip2/blocks/apply_linear.hpp"
#include "blip2/blocks/attention_block.hpp"  // norm_placement, block_scratch, grads_or_none
#include "blip2/blocks/weights.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/relu.hpp"

namespace blip2 {

enum class activation { gelu, relu };

struct feed_forward_options {
  norm_placement norm = norm_placement::post;
  activation act = activation::gelu;
  double layer_norm_eps = 1e-12;
  double hidden_dropout = 0.0;
  std::uint64_t seed = 0;  // the range [r0, r1) uses seed + r0
};

template <class T, memory_space S = host_space>
struct feed_forward_state {
  tensor_view<T, 2, S> normed;            // (n, C) pre-LN: LayerNorm(x)
  tensor_view<T, 1, S> in_mean, in_rstd;  // (n)
  tensor_view<T, 2, S> inter, act;        // (n, F)
  tensor_view<T, 2, S> sum;               // (n, C) post-LN: the residual sum before the LayerNorm
  tensor_view<T, 2, S> out;               // (n, C)
  tensor_view<T, 1, S> mean, rstd;        // (n) post-LN
};

template <class T, memory_space S, class Carver>
void feed_forward_layout(Carver& a, feed_forward_state<T, S>& st, norm_placement norm, index_t n, index_t C,
                         index_t F) {
  st = {};
  detail::lay_out_input_norm(a, norm, st.normed, st.in_mean, st.in_rstd, n, C);
  st.inter = a.template take<2>({n, F});
  st.act = a.template take<2>({n, F});
  if (norm == norm_placement::post) {
    st.sum = a.template take<2>({n, C});
    st.mean = a.template take<1>({n});
    st.rstd = a.template take<1>({n});
  }
  st.out = a.template take<2>({n, C});
}

namespace detail {
template <class T, memory_space S>
struct ffn_rows {  // the state's views of rows [r0, r1)
  tensor_view<T, 2, S> normed, inter, act, sum, out;
  tensor_view<T, 1, S> in_mean, in_rstd, mean, rstd;
  ffn_rows(const feed_forward_state<T, S>& st, index_t r0, index_t r1) {
    auto rr = [&](const auto& v) { return v.data() ? row_range(v, r0, r1) : v; };
    normed = rr(st.normed), inter = rr(st.inter), act = rr(st.act), sum = rr(st.sum), out = rr(st.out);
    in_mean = rr(st.in_mean), in_rstd = rr(st.in_rstd), mean = rr(st.mean), rstd = rr(st.rstd);
  }
};
}  // namespace detail

// st.out rows [r0, r1) from x (r1 - r0, C)
template <backend Be, class T, memory_space S>
void feed_forward_forward(Be& be, const feed_forward_weights<T, S>& w, feed_forward_state<T, S>& st, index_t r0,
                          index_t r1, tensor_view<const T, 2, S> x, const feed_forward_options& o) {
  if (r1 == r0) return;
  const detail::ffn_rows<T, S> r(st, r0, r1);
  const auto a = detail::block_input(be, x, r.normed, r.in_mean, r.in_rstd, w.norm, o.norm, o.layer_norm_eps);
  apply_linear(be, r.inter, a, w.intermediate);  // (n, F)
  if (o.act == activation::gelu)
    gelu_forward(be, r.act, detail::as_const(r.inter));
  else
    relu_forward(be, r.act, detail::as_const(r.inter));
  auto sum = o.norm == norm_placement::post ? r.sum : r.out;  // (n, C)
  apply_linear(be, sum, detail::as_const(r.act), w.output);
  if (o.hidden_dropout > 0) dropout_forward(be, sum, sum, o.hidden_dropout, o.seed + static_cast<std::uint64_t>(r0));
  axpy(be, sum, x);
  if (o.norm == norm_placement::post)
    layer_norm_forward(be, r.out, layer_norm_cache<T, S>{r.mean, r.rstd}, sum, w.norm.weight, w.norm.bias,
                       o.layer_norm_eps);
}

// dx (r1 - r0, C) assigned from dout (r1 - r0, C); g += unless null. dout and dx may be the same rows.
template <backend Be, class T, memory_space S>
void feed_forward_backward(Be& be, const feed_forward_weights<T, S>& w, const feed_forward_weights<T, S>* g,
                           feed_forward_state<T, S>& st, block_scratch<T, S>& sc, index_t r0, index_t r1,
                           tensor_view<const T, 2, S> x, tensor_view<const T, 2, S> dout, tensor_view<T, 2, S> dx,
                           const feed_forward_options& o) {
  if (r1 == r0) return;
  const detail::ffn_rows<T, S> r(st, r0, r1);
  auto rr = [&](const tensor_view<T, 2, S>& v) { return row_range(v, r0, r1); };
  // d(sum): through the LayerNorm (post-LN), or dout itself (pre-LN: out = sum)
  tensor_view<const T, 2, S> dsum = dout;
  if (o.norm == norm_placement::post) {
    // out = layer_norm(sum)
    const auto gn = detail::grads_or_none(g ? &g->norm : nullptr);
    layer_norm_backward(be, rr(sc.d_sum), gn.weight, gn.bias, dout, detail::as_const(r.sum), w.norm.weight,
                        layer_norm_cache<T, S>{r.mean, r.rstd});
    dsum = detail::as_const(rr(sc.d_sum));
  }
  // sum = dropout(act W2 + b2) + x: the residual passes d(sum) to x
  copy(be, dx, dsum);
  tensor_view<const T, 2, S> ddense = dsum;
  if (o.hidden_dropout > 0) {
    dropout_backward(be, rr(sc.d_tmp), dsum, o.hidden_dropout, o.seed + static_cast<std::uint64_t>(r0));
    ddense = detail::as_const(rr(sc.d_tmp));
  }
  // act W2 + b2
  auto dact = rr(sc.d_f), dinter = rr(sc.d_f2);
  const auto go = detail::grads_or_none(g ? &g->output : nullptr);
  linear_backward(be, dact, go.weight, go.bias, ddense, detail::as_const(r.act), w.output.weight);
  // act = gelu(inter) or relu(inter)
  if (o.act == activation::gelu)
    gelu_backward(be, dinter, detail::as_const(dact), detail::as_const(r.inter));
  else
    relu_backward(be, dinter, detail::as_const(dact), detail::as_const(r.inter));
  // inter = a W1 + b1
  const bool pre = o.norm == norm_placement::pre;
  const auto gi = detail::grads_or_none(g ? &g->intermediate : nullptr);
  const auto da = rr(sc.d_sum);  // pre-LN: d(a), a = LayerNorm(x)
  linear_backward(be, pre ? da : dx, gi.weight, gi.bias, detail::as_const(dinter),
                  pre ? detail::as_const(r.normed) : x, w.intermediate.weight,
                  pre ? grad_write::assign : grad_write::accumulate);
  detail::block_input_backward(be, dx, detail::as_const(da), x, r.in_mean, r.in_rstd, w.norm,
                               g ? &g->norm : nullptr, o.norm);
}

}  // namespace blip2
