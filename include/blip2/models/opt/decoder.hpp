// blip2/models/opt/decoder.hpp: the OPT decoder (Hugging Face modeling_opt.py) on the blocks, forward
// through a KV cache and backward to its input embeddings.
//
// Dimensions: B sequences, L positions of this pass, P positions already in the cache, S = P + L keys,
//             C hidden, Dw word width, F feed-forward width, NH heads, V embedding rows.
// Rows are sequence-major (core/rows.hpp): row p B + b is position P + p of sequence b.
//
//   positions  pos(b, s) = (number of ones in mask(b, 0..s)) * mask(b, s) - 1, table row pos + 2:
//              left pads (mask 0) get row 1 and do not shift the real positions
//   entry      h = project_in(embeds) (only when Dw != C) + embed_positions[pos + 2]
//   layer      pre-LN  (do_layer_norm_before):   h = h + out_proj(attn(LN(h)));  h = h + fc2(relu(fc1(LN(h))))
//              post-LN (opt-350m):               h = LN(h + out_proj(attn(h)));  h = LN(h + fc2(relu(fc1(h))))
//              attention: q = (x Wq + bq) / sqrt(head_dim) (the scale is in the attention op: the same
//              numbers), causal over the cache plus this pass, and the key padding mask(b, s) == 0
//   exit       out = project_out(final_layer_norm(h))  (each only where the config has it)  (L B, Dw)
//   logits     out rows . lm_head^T  (V): opt_logits, for the rows the caller wants
// The mask is the whole attention mask so far, (B, S), as Hugging Face takes it: the cache's positions
// and this pass's. Dropout (config dropout on out_proj and fc2 outputs, attention_dropout on the
// probabilities) runs only when the pass is marked training; frozen-LLM stage 2 runs without it.
//
// Backward: from d(out) (L B, Dw) to d(embeds) (L B, Dw), ASSIGNED. Parameter gradients are ADDED into
// the model's gradient arena when it has one (opt_storage::with_gradients) and not computed at all when
// it is frozen. opt_logits_backward turns d(logits) into d(out) (and the lm_head's gradient, which is
// embed_tokens' when tied).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "blip2/blocks/attention_block.hpp"
#include "blip2/blocks/feed_forward_block.hpp"
#include "blip2/blocks/kv_cache.hpp"
#include "blip2/core/index_list.hpp"
#include "blip2/models/opt/model.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/linear_bf16.hpp"

namespace blip2 {

struct opt_run_options {
  bool training = false;   // dropout as the config says
  std::uint64_t seed = 0;  // dropout seed of the pass
};

template <class T, memory_space Space = host_space>
struct opt_layer_state {
  attention_block_state<T, Space> attn;
  feed_forward_state<T, Space> ffn;
};

template <class T, memory_space Space = host_space>
struct opt_pass_state {
  index_t B = 0, L = 0, P = 0, S = 0;
  opt_run_options run;
  row_plan<Space> plan;
  index_list<Space> positions;           // (L B) rows of embed_positions
  std::vector<T> key_padding_host;       // (B, S) 1 keep, 0 pad
  tensor_view<T, 2, Space> key_padding;  // (B, S)
  tensor_view<const T, 2, Space> embeds; // (L B, Dw) the input, read again by backward
  tensor_view<T, 2, Space> h0;           // (L B, C) layer 0's input
  std::vector<opt_layer_state<T, Space>> layers;
  tensor_view<T, 2, Space> normed;       // (L B, C) final LayerNorm (pre-LN)
  tensor_view<T, 1, Space> mean, rstd;   // (L B)
  tensor_view<T, 2, Space> out;          // (L B, Dw) the decoder output (a view of normed / the last layer when Dw == C)
  block_scratch<T, Space> scratch;
  tensor_view<T, 2, Space> g_a, g_b;     // (L B, C) backward
  buffer<T, Space> storage;
};

namespace detail {

inline attention_block_options opt_attention_options(const opt_config& c, const opt_run_options& r, index_t l) {
  attention_block_options o;
  o.num_heads = c.num_attention_heads;
  o.norm = c.do_layer_norm_before ? norm_placement::pre : norm_placement::post;
  o.layer_norm_eps = c.layer_norm_eps;
  o.attention_dropout = r.training ? c.attention_dropout : 0.0;
  o.hidden_dropout = r.training ? c.dropout : 0.0;
  o.probs_seed = r.seed + 4 * static_cast<std::uint64_t>(l) + 1;
  o.out_seed = r.seed + 4 * static_cast<std::uint64_t>(l) + 2;
  return o;
}
inline feed_forward_options opt_ffn_options(const opt_config& c, const opt_run_options& r, index_t l) {
  feed_forward_options o;
  o.norm = c.do_layer_norm_before ? norm_placement::pre : norm_placement::post;
  o.act = c.activation_function == "gelu" ? activation::gelu : activation::relu;
  o.layer_norm_eps = c.layer_norm_eps;
  o.hidden_dropout = r.training ? c.dropout : 0.0;
  // feed_forward_block draws from seed + r0; keep the layers' streams apart
  o.seed = (r.seed + 4 * static_cast<std::uint64_t>(l) + 3) << 20;
  return o;
}

// positions and key padding from the mask (B, S); errors name the first position past the table
template <class T, memory_space Space>
void plan_opt_pass(const opt_config& cfg, opt_pass_state<T, Space>& st, tensor_view<const index_t, 2> mask) {
  const index_t B = st.B, L = st.L, P = st.P, S = st.S;
  check_shape("opt_forward", "attention_mask", mask, {B, S});
  st.positions.host.resize(static_cast<std::size_t>(L * B));
  st.key_padding_host.resize(static_cast<std::size_t>(B * S));
  for (index_t b = 0; b < B; ++b) {
    index_t ones = 0;
    for (index_t s = 0; s < S; ++s) {
      const index_t m = mask(b, s);
      BLIP2_CHECK(m == 0 || m == 1, value_error, "opt_forward: attention_mask(", b, ", ", s, ") = ", m,
                  " is not 0 or 1");
      ones += m;
      st.key_padding_host[static_cast<std::size_t>(b * S + s)] = static_cast<T>(m);
      if (s < P) continue;
      const index_t pos = ones * m - 1;
      BLIP2_CHECK(pos < cfg.max_position_embeddings, value_error, "opt_forward: sequence ", b, " reaches position ",
                  pos, " but the decoder has max_position_embeddings = ", cfg.max_position_embeddings,
                  " (the soft prompt, the prompt and the generated tokens together are too long)");
      st.positions.host[static_cast<std::size_t>((s - P) * B + b)] = pos + 2;
    }
  }
}

}  // namespace detail

// st.out (L B, Dw) from embeds (L B, Dw); appends L positions to every layer's cache (which must have
// room: cache.reserve(num_layers, B, P + L or more, C, false)). mask (B, P + L) is host data.
template <backend Be, class T, memory_space Space>
void opt_forward(Be& be, const opt_model<T, Space>& m, opt_pass_state<T, Space>& st, layer_kv_caches<T, Space>& cache,
                 tensor_view<const T, 2, Space> embeds, tensor_view<const index_t, 2> mask, opt_run_options run = {}) {
  constexpr std::string_view op = "opt_forward";
  const auto& cfg = m.config();
  const auto& W = m.w;
  const index_t C = cfg.hidden_size, Dw = cfg.word_embed_proj_dim, F = cfg.ffn_dim, NL = cfg.num_hidden_layers;
  const index_t B = cache.batch(), P = cache.length();
  BLIP2_CHECK(static_cast<index_t>(cache.layers.size()) == NL, shape_error, op, ": the cache has ",
              cache.layers.size(), " layers, the decoder ", NL);
  BLIP2_CHECK(B > 0 && embeds.extent(0) % B == 0, shape_error, op, ": embeds have shape ", shape_string(embeds),
              " but the cache holds ", B, " sequences: (L B, Dw) rows are needed");
  const index_t L = embeds.extent(0) / B;
  detail::check_shape(op, "embeds", embeds, {L * B, Dw});
  st.B = B, st.L = L, st.P = P, st.S = P + L, st.run = run;
  st.embeds = embeds;
  st.plan = row_plan<Space>(B, L, L);
  detail::plan_opt_pass(cfg, st, mask);
  const index_t LB = L * B;
  const auto norm = cfg.do_layer_norm_before ? norm_placement::pre : norm_placement::post;
  lay_out(st.storage, [&](auto& a) {
    st.key_padding = a.template take<2>({B, st.S});
    st.h0 = a.template take<2>({LB, C});
    st.layers.resize(static_cast<std::size_t>(NL));
    for (auto& ls : st.layers) {
      attention_block_layout(a, ls.attn, norm, B, LB, LB, L, st.S, C, cfg.num_attention_heads);
      feed_forward_layout(a, ls.ffn, norm, LB, C, F);
    }
    st.normed = {}, st.mean = {}, st.rstd = {};
    if (cfg.has_final_layer_norm()) {
      st.normed = a.template take<2>({LB, C});
      st.mean = a.template take<1>({LB});
      st.rstd = a.template take<1>({LB});
    }
    st.out = cfg.has_projections() ? a.template take<2>({LB, Dw}) : tensor_view<T, 2, Space>{};
    st.scratch.lay_out(a, B, L, st.S, LB, C, F, false);
    st.g_a = a.template take<2>({LB, C});
    st.g_b = a.template take<2>({LB, C});
  });
  st.positions.upload(be);
  copy_from_host(be, st.key_padding, tensor_view<const T, 2>(st.key_padding_host.data(), {B, st.S}));

  // entry: h0 = project_in(embeds) + embed_positions[pos + 2]
  embedding_forward(be, st.h0, st.positions.view(), W.embed_positions);
  if (cfg.has_projections()) {
    auto tmp = st.g_a;  // free until backward
    linear_forward(be, tmp, embeds, W.project_in);
    axpy(be, st.h0, detail::as_const(tmp));
  } else {
    axpy(be, st.h0, embeds);
  }
  tensor_view<const T, 2, Space> x = detail::as_const(st.h0);
  for (index_t l = 0; l < NL; ++l) {
    auto& ls = st.layers[static_cast<std::size_t>(l)];
    const auto& Wl = W.layers[static_cast<std::size_t>(l)];
    self_attention_forward(be, Wl.self, ls.attn, st.scratch, x, st.plan, cache.layers[static_cast<std::size_t>(l)],
                           causal{P}, detail::as_const(st.key_padding), detail::opt_attention_options(cfg, run, l));
    feed_forward_forward(be, Wl.ffn, ls.ffn, 0, LB, detail::as_const(ls.attn.out),
                         detail::opt_ffn_options(cfg, run, l));
    x = detail::as_const(ls.ffn.out);
  }
  // exit
  if (cfg.has_final_layer_norm()) {
    layer_norm_forward(be, st.normed, layer_norm_cache<T, Space>{st.mean, st.rstd}, x, W.final_norm.weight,
                       W.final_norm.bias, cfg.layer_norm_eps);
    x = detail::as_const(st.normed);
  }
  if (cfg.has_projections())
    linear_forward(be, st.out, x, W.project_out);
  else
    st.out = tensor_view<T, 2, Space>(const_cast<T*>(x.data()), x.extents(), x.strides());  // our own arena
}

// logits (R, V) = rows (R, Dw) . lm_head^T
template <backend Be, class T, memory_space Space>
void opt_logits(Be& be, const opt_model<T, Space>& m, tensor_view<T, 2, Space> logits, tensor_view<const T, 2, Space> rows) {
  if (m.w.lm_head_bf16.data())
    linear_bf16_forward(be, logits, rows, m.w.lm_head_bf16);
  else
    linear_forward(be, logits, rows, m.w.lm_head);
}

// d(rows) (R, Dw) from d(logits) (R, V): assigned, or added (mode); lm_head's gradient += when trainable.
template <backend Be, class T, memory_space Space>
void opt_logits_backward(Be& be, opt_model<T, Space>& m, tensor_view<T, 2, Space> drows,
                         tensor_view<const T, 2, Space> dlogits, tensor_view<const T, 2, Space> rows,
                         grad_write mode = grad_write::assign) {
  auto* g = m.gradients_or_null();
  linear_backward(be, drows, g ? g->lm_head : tensor_view<T, 2, Space>{}, dlogits, rows, m.w.lm_head, mode);
}

// d(embeds) (L B, Dw) assigned from d(out) (L B, Dw) of the pass st (which must be the cache's last
// pass: its keys are still there).
template <backend Be, class T, memory_space Space>
void opt_backward(Be& be, opt_model<T, Space>& m, opt_pass_state<T, Space>& st, layer_kv_caches<T, Space>& cache,
                  tensor_view<const T, 2, Space> dout, tensor_view<T, 2, Space> dembeds) {
  constexpr std::string_view op = "opt_backward";
  const auto& cfg = m.config();
  const auto& W = m.w;
  auto* g = m.gradients_or_null();
  const index_t NL = cfg.num_hidden_layers, LB = st.L * st.B, Dw = cfg.word_embed_proj_dim;
  detail::check_shape(op, "dout", dout, {LB, Dw});
  detail::check_shape(op, "dembeds", dembeds, {LB, Dw});
  BLIP2_CHECK(!m.has_bfloat16(), value_error, op, ": the forward read the bfloat16 copies of the decoder's matrices ",
              "(store_bfloat16): backward needs the float weights the forward used");
  BLIP2_CHECK(cache.length() == st.P + st.L, value_error, op, ": the cache holds ", cache.length(),
              " positions, but the pass ended at ", st.P + st.L, " (run backward right after the forward)");
  auto last_in = [&]() -> tensor_view<const T, 2, Space> {
    return NL > 0 ? detail::as_const(st.layers.back().ffn.out) : detail::as_const(st.h0);
  };
  // exit: project_out, then the final LayerNorm; d(h) of the last layer's output into g_a
  tensor_view<T, 2, Space> d = st.g_a, other = st.g_b;
  const auto exit_in = cfg.has_final_layer_norm() ? detail::as_const(st.normed) : last_in();
  tensor_view<const T, 2, Space> d_exit = dout;
  if (cfg.has_projections()) {
    linear_backward(be, cfg.has_final_layer_norm() ? other : d, g ? g->project_out : tensor_view<T, 2, Space>{},
                    dout, exit_in, W.project_out);
    d_exit = detail::as_const(cfg.has_final_layer_norm() ? other : d);
  } else if (!cfg.has_final_layer_norm()) {
    copy(be, d, dout);
  }
  if (cfg.has_final_layer_norm()) {
    const auto gn = detail::grads_or_none(g ? &g->final_norm : nullptr);
    layer_norm_backward(be, d, gn.weight, gn.bias, d_exit, last_in(), W.final_norm.weight,
                        layer_norm_cache<T, Space>{st.mean, st.rstd});
  }
  // layers, last first: d holds d(layer output)
  for (index_t l = NL - 1; l >= 0; --l) {
    auto& ls = st.layers[static_cast<std::size_t>(l)];
    const auto& Wl = W.layers[static_cast<std::size_t>(l)];
    auto* gl = g ? &g->layers[static_cast<std::size_t>(l)] : nullptr;
    feed_forward_backward(be, Wl.ffn, gl ? &gl->ffn : nullptr, ls.ffn, st.scratch, 0, LB, detail::as_const(ls.attn.out),
                          detail::as_const(d), other, detail::opt_ffn_options(cfg, st.run, l));
    const auto x = l > 0 ? detail::as_const(st.layers[static_cast<std::size_t>(l - 1)].ffn.out) : detail::as_const(st.h0);
    self_attention_backward(be, Wl.self, gl ? &gl->self : nullptr, ls.attn, st.scratch, x, detail::as_const(other), d,
                            st.plan, cache.layers[static_cast<std::size_t>(l)], causal{st.P},
                            detail::as_const(st.key_padding), detail::opt_attention_options(cfg, st.run, l));
  }
  // entry: h0 = project_in(embeds) + positions
  if (g) embedding_backward(be, g->embed_positions, detail::as_const(d), st.positions.view());
  if (cfg.has_projections())
    linear_backward(be, dembeds, g ? g->project_in : tensor_view<T, 2, Space>{}, detail::as_const(d), st.embeds,
                    W.project_in);
  else
    copy(be, dembeds, detail::as_const(d));
}

}  // namespace blip2
