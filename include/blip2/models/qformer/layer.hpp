// blip2/models/qformer/layer.hpp: one Q-Former layer (post-LN BERT with cross-attention on the query
// rows), forward and backward, as a short list of block calls.
//
// Dimensions: B batch, Lq query positions (Q or 0), n rows the layer outputs, C hidden, N image tokens.
//   h1  = LayerNorm(dropout(attention(x Wq, keys, values) Wd + bd) + x)          every row; keys: the cache
//   h2  = LayerNorm(dropout(attention(h1 Wq', img Wk', img Wv') Wd' + bd') + h1)  query rows, cross layers
//   out = LayerNorm(dropout(gelu(h W1 + b1) W2 + b2) + h)                         query rows: the *_query FFN
//                                                                                 on h2 (or h1); text rows:
//                                                                                 the text FFN on h1
// Rows are the pass's computed rows, the Lq B query rows first; which rows those are (padding skipped, a
// truncated last layer) is the row plan's business (blocks/row_plan.hpp), not the layer's.
#pragma once
#include <cstdint>

#include "blip2/blocks/attention_block.hpp"
#include "blip2/blocks/feed_forward_block.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/models/qformer/image_kv.hpp"
#include "blip2/models/qformer/masks.hpp"

namespace blip2 {

enum class qformer_attention { bidirectional, multimodal_causal };

template <class T, memory_space Space = host_space>
struct qformer_layer_state {
  attention_block_state<T, Space> self;    // every computed row (out: h1)
  attention_block_state<T, Space> cross;   // query rows (out: h2), when the layer cross-attends
  tensor_view<T, 3, Space> ck, cv;         // (B, N, C) each element's image K/V, when gathered
  feed_forward_state<T, Space> ffn;        // query rows, then text rows (out: the layer's output)
};

// What every layer of a pass shares.
template <class T, memory_space Space = host_space>
struct qformer_layer_context {
  const qformer_config* cfg = nullptr;
  const row_plan<Space>* plan = nullptr;
  index_t Lq = 0;                        // query positions
  qformer_attention attention = qformer_attention::bidirectional;
  tensor_view<const T, 2, Space> key_padding;   // (B, S) 1 keep, 0 pad
  pass_image_kv<T, Space> image;                // cross-attention source
  block_scratch<T, Space>* scratch = nullptr;
  tensor_view<T, 3, Space> dck, dcv;            // (B, N, C) per-element image K/V gradients, when gathered
  bool training = false;                 // dropout as the config says
  std::uint64_t seed = 0;                // the pass's dropout seed

  enum site : int { embed_site = 0, self_probs, self_out, cross_probs, cross_out, ffn_out };
  // The dropout seed of site `site` of layer `layer` (-1: the embeddings).
  std::uint64_t site_seed(index_t layer, int site) const {
    const auto r = random_bits(seed, static_cast<std::uint64_t>(layer + 1) * 16u + static_cast<std::uint64_t>(site));
    return (static_cast<std::uint64_t>(r[0]) << 32) | r[1];
  }
  double hidden_p() const { return training ? cfg->hidden_dropout_prob : 0.0; }
  attention_block_options attention_options(index_t l, bool cross) const {
    attention_block_options o;
    o.num_heads = cfg->num_attention_heads;
    o.norm = norm_placement::post;
    o.layer_norm_eps = cfg->layer_norm_eps;
    o.attention_dropout = training ? cfg->attention_probs_dropout_prob : 0.0;
    o.hidden_dropout = hidden_p();
    o.probs_seed = site_seed(l, cross ? cross_probs : self_probs);
    o.out_seed = site_seed(l, cross ? cross_out : self_out);
    return o;
  }
  feed_forward_options ffn_options(index_t l) const {
    feed_forward_options o;
    o.norm = norm_placement::post;
    o.act = activation::gelu;
    o.layer_norm_eps = cfg->layer_norm_eps;
    o.hidden_dropout = hidden_p();
    o.seed = site_seed(l, ffn_out);
    return o;
  }
  // f(policy) with the self-attention mask: over P cached positions before this pass's, causal{P} (ITG's
  // text over the queries' K/V: text sees every cached query and itself and before); else the pass's
  template <class F>
  void with_self_mask(index_t P, F&& f) const {
    if (P > 0)
      f(causal{P});
    else if (attention == qformer_attention::multimodal_causal)
      f(multimodal_causal_mask{Lq});
    else
      f(bidirectional{});
  }
};

template <backend Be, class T, memory_space Space>
void qformer_layer_forward(Be& be, const qformer_layer_weights<T, Space>& W, qformer_layer_state<T, Space>& ls,
                           kv_cache<T, Space>& cache, tensor_view<const T, 2, Space> x, index_t l,
                           const qformer_layer_context<T, Space>& c) {
  const index_t QB = c.Lq * c.plan->batch(), n = ls.self.rows_out;
  // h1 = LayerNorm(dropout(attention(x Wq, keys, values) Wd + bd) + x), keys: the cache, then this pass's
  c.with_self_mask(cache.length(), [&](const auto& mask) {
    self_attention_forward(be, W.self, ls.self, *c.scratch, x, *c.plan, cache, mask, c.key_padding,
                           c.attention_options(l, false));
  });
  const auto h1 = detail::as_const(ls.self.out);
  // h2 = LayerNorm(dropout(attention(h1 Wq', image K, image V) Wd' + bd') + h1), query rows
  auto hq = row_range(h1, 0, QB);
  if (W.has_cross && QB > 0) {
    const auto [k, v] = c.image.forward(be, static_cast<std::size_t>(l), ls.ck, ls.cv);
    cross_attention_forward(be, W.cross, ls.cross, hq, k, v, c.attention_options(l, true));
    hq = detail::as_const(ls.cross.out);
  }
  // out = LayerNorm(dropout(gelu(h W1 + b1) W2 + b2) + h): query rows, then text rows, each with its FFN
  feed_forward_forward(be, W.query, ls.ffn, 0, QB, hq, c.ffn_options(l));
  feed_forward_forward(be, W.text, ls.ffn, QB, n, row_range(h1, QB, n), c.ffn_options(l));
}

// dx (Lp, C) assigned from dout (n, C); parameter gradients += into G; image K/V gradients into the image
// state; dh (Lp, C) is scratch.
template <backend Be, class T, memory_space Space>
void qformer_layer_backward(Be& be, const qformer_layer_weights<T, Space>& W, qformer_layer_weights<T, Space>& G,
                            qformer_layer_state<T, Space>& ls, kv_cache<T, Space>& cache, tensor_view<const T, 2, Space> x,
                            tensor_view<const T, 2, Space> dout, tensor_view<T, 2, Space> dx, tensor_view<T, 2, Space> dh, index_t l,
                            const qformer_layer_context<T, Space>& c) {
  auto& sc = *c.scratch;
  const index_t QB = c.Lq * c.plan->batch(), n = ls.self.rows_out;
  const auto h1 = detail::as_const(ls.self.out);
  const bool cross = W.has_cross && QB > 0;
  const auto hq = cross ? detail::as_const(ls.cross.out) : row_range(h1, 0, QB);
  // out = FFN(h): dh = d(h2) on the query rows (d(h1) without cross-attention), d(h1) on the text rows
  feed_forward_backward(be, W.query, &G.query, ls.ffn, sc, 0, QB, hq, row_range(dout, 0, QB), row_range(dh, 0, QB),
                        c.ffn_options(l));
  feed_forward_backward(be, W.text, &G.text, ls.ffn, sc, QB, n, row_range(h1, QB, n), row_range(dout, QB, n),
                        row_range(dh, QB, n), c.ffn_options(l));
  // h2 = cross-attention(h1): d(h1) of the query rows replaces d(h2) in place
  if (cross) {
    const auto li = static_cast<std::size_t>(l);
    const auto [k, v] = c.image.keys_values(li, ls.ck, ls.cv);
    const auto [dk, dv] = c.image.grads(li, c.dck, c.dcv);
    cross_attention_backward(be, W.cross, &G.cross, ls.cross, sc, row_range(h1, 0, QB),
                             detail::as_const(row_range(dh, 0, QB)), row_range(dh, 0, QB), k, v, dk, dv,
                             c.image.grad_mode(), c.attention_options(l, true));
    c.image.backward_done(be, li, c.dck, c.dcv);
  }
  // h1 = self-attention(x)
  c.with_self_mask(ls.self.first_position, [&](const auto& mask) {
    self_attention_backward(be, W.self, &G.self, ls.self, sc, x, detail::as_const(row_range(dh, 0, n)), dx, *c.plan,
                            cache, mask, c.key_padding, c.attention_options(l, false));
  });
}

}  // namespace blip2
