// blip2/models/qformer/pass.hpp: a Q-Former pass (embeddings, then every layer), forward and backward,
// and the passes of BLIP-2.
//
// Dimensions: B batch (pairs), Q learned queries, T text tokens, N image tokens, C hidden,
//             Lq = Q or 0 query positions in a pass, L = Lq + T positions, P positions of a cached K/V
//             prefix, S = P + L keys, Lp computed rows (row plan), R positions the output is read at.
//
//   x0  = dropout(LayerNorm([query_tokens ; word_emb[ids] + pos_emb[0..T)]))     qformer.layernorm
//   x   = layer_l(x) for every layer (models/qformer/layer.hpp)
// Activations are SEQUENCE-MAJOR (core/rows.hpp): the query rows of every batch element are one dense
// block [0, Lq B) and the text rows the next one.
//
// Passes (each a qformer_pass_state filled by qformer_forward, undone by qformer_backward):
//   image pass         queries only, cross-attention to the image                    (ITC image side)
//   text pass          text only, padding mask                                        (ITC text side)
//   joint pass         [queries ; text], bidirectional or multimodal-causal, cross-attention on queries
//   cached-K/V pass    text only over an image pass's cached query K/V (`prefix`), mask causal{Q}
//                      (ITG training: equals the multimodal-causal joint pass on the text rows)
// Each layer's keys and values live in a kv_cache (blocks/kv_cache.hpp). A cached-K/V pass forks the
// prefix pass's caches; its backward adds the prefix keys' gradients there, so run it before the prefix
// pass's backward. Parameter gradients accumulate into model.g.
//
// Reading only the first positions (output_positions = R > 0, bidirectional passes without a prefix): the
// ITM head reads the query positions of a joint pass and ITC the [CLS] position of a text pass. In the
// last layer nothing else depends on the other positions except through their keys and values, so the
// last layer computes everything but K and V for positions [0, R) only; output rows [R B, L B) are left
// unset and backward reads only rows [0, R B) of dout. The kept rows are the same function of the inputs
// as in the full pass; under attention dropout the last layer's probs are (B, NH, R, S), so its mask is
// drawn over that shape (an equally valid mask, not the full pass's mask restricted).
//
// Skipping padding (skip_padding): a text position whose attention_mask is 0 is a key every row masks
// out (a score 10000 below the others: its softmax weight underflows to 0), so if nothing reads its own
// output its whole row is dead work (LAVIS pads every caption to 32 tokens). With the flag the row plan
// leaves those rows out of the row-wise work. Kept rows come out the same as without the flag; skipped
// rows of output() are 0, and backward ignores dout on them. A batch element with no key at all to attend
// to (no queries, no prefix, every text position masked) keeps its rows. Under hidden dropout the masks
// are drawn over the computed rows (equally valid, not the same elements).
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "blip2/blocks/kv_cache.hpp"
#include "blip2/blocks/row_plan.hpp"
#include "blip2/core/arena.hpp"
#include "blip2/core/buffer.hpp"
#include "blip2/core/index_list.hpp"
#include "blip2/models/qformer/image_kv.hpp"
#include "blip2/models/qformer/layer.hpp"
#include "blip2/models/qformer/model.hpp"
#include "blip2/nn/dropout.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/layer_norm.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
struct qformer_pass_state;

// What a pass is. Ids, mask and image index are host data (made on the host, copied once by the pass).
template <class T, memory_space Space = host_space>
struct qformer_pass_inputs {
  index_t batch = 0;                                 // B
  bool queries = false;                              // include the Q learned queries
  tensor_view<const index_t, 2> input_ids;           // (B, T) or empty: no text
  tensor_view<const index_t, 2> attention_mask;      // (B, T) of 0/1, or empty: all ones
  qformer_attention attention = qformer_attention::bidirectional;
  image_kv_state<T, Space>* image = nullptr;                // cross-attention source (needed when queries)
  std::span<const index_t> image_index;              // image of each batch element; empty: b -> b
  qformer_pass_state<T, Space>* prefix = nullptr;           // an image pass whose query K/V prefix the keys (ITG)
  bool training = false;                             // dropout as the config says; off in evaluation
  std::uint64_t seed = 0;                            // dropout seed of this pass
  index_t output_positions = 0;                      // R > 0: the last layer computes positions [0, R) only
                                                     // (see the header); 0: all L positions
  bool skip_padding = false;                         // do not compute text rows whose attention_mask is 0
                                                     // (see the header); their output rows are 0
};

template <class T, memory_space Space>
struct qformer_pass_state {
  qformer_pass_inputs<T, Space> in;
  index_t B = 0, Lq = 0, T_text = 0, L = 0, P = 0, S = 0, N = 0;
  index_t R = 0;                         // positions the output is read at (L unless output_positions)
  row_plan<Space> plan;                       // which rows are computed
  index_list<Space> ids;                 // text ids of the computed text rows, sequence-major
  index_list<Space> pos;                 // (Lp) embedding-table row of each computed row
  index_list<Space> image_rows;          // (B) image of each batch element (when paired)
  std::vector<T> key_padding_host;       // (B, S) made on the host, then copied
  tensor_view<T, 2, Space> key_padding;  // (B, S): 1 keep, 0 pad
  tensor_view<T, 2, Space> emb, x0;             // (Lp, C): embeddings before / after LayerNorm (+ dropout)
  tensor_view<T, 1, Space> emb_mean, emb_rstd;  // (Lp)
  std::vector<qformer_layer_state<T, Space>> layers;
  layer_kv_caches<T, Space> cache;              // every layer's keys and values (forked from the prefix's)
  tensor_view<T, 2, Space> out_padded;          // (L B, C): the output in the attention layout, when packed
  block_scratch<T, Space> scratch;
  tensor_view<T, 2, Space> g_out, g_x, g_h;     // (Lp, C) backward: d(layer output), d(layer input), d(h)
  tensor_view<T, 3, Space> g_ck, g_cv;          // (B, N, C) gathered image K/V gradients
  buffer<T, Space> storage;

  bool packed() const { return plan.packed(); }
  // The last layer's output, sequence-major (L B, C); rows [0, Lq B) are the queries. Only rows [0, R B)
  // are set when the pass was run with output_positions, and skipped padding rows are 0.
  tensor_view<T, 2, Space> output() const { return packed() ? out_padded : layers.empty() ? x0 : layers.back().ffn.out; }
  // The same as (B, L, C) (a strided view, no copy).
  tensor_view<T, 3, Space> output_by_batch() const { return by_batch(output(), B); }
};

namespace detail {

template <class T, memory_space Space>
qformer_layer_context<T, Space> layer_context(const qformer_model<T, Space>& m, qformer_pass_state<T, Space>& st) {
  qformer_layer_context<T, Space> c;
  c.cfg = &m.config().qformer;
  c.plan = &st.plan;
  c.Lq = st.Lq;
  c.attention = st.in.attention;
  c.key_padding = as_const(st.key_padding);
  c.image = pass_image_kv<T, Space>{st.in.image, st.in.image_index.empty() ? tensor_view<const index_t, 1, Space>{}
                                                                           : st.image_rows.view()};
  c.scratch = &st.scratch;
  c.dck = st.g_ck, c.dcv = st.g_cv;
  c.training = st.in.training;
  c.seed = st.in.seed;
  return c;
}

// Checks the inputs and sets the pass's sizes, row plan, embedding indices and key padding (host work).
template <class T, memory_space Space>
void plan_pass(const qformer_model<T, Space>& m, qformer_pass_state<T, Space>& st, const qformer_pass_inputs<T, Space>& in) {
  constexpr std::string_view op = "qformer_forward";
  const auto& cfg = m.config().qformer;
  const index_t B = in.batch;
  const bool text = in.input_ids.data() != nullptr;
  BLIP2_CHECK(B > 0, value_error, op, ": batch must be positive, got ", B);
  BLIP2_CHECK(in.queries || text, value_error, op, ": a pass needs queries, text, or both");
  BLIP2_CHECK(!text || m.config().with_text, value_error, op,
              ": this model has no text side (a Blip2ForConditionalGeneration checkpoint): text passes are unavailable");
  BLIP2_CHECK(!(in.prefix && in.queries), value_error, op, ": a pass over a cached K/V prefix is text only");
  const index_t Tn = text ? in.input_ids.extent(1) : 0;
  if (text) {
    check_shape(op, "input_ids", in.input_ids, {B, Tn});
    BLIP2_CHECK(Tn <= cfg.max_position_embeddings, shape_error, op, ": input_ids has ", Tn,
                " tokens, more than max_position_embeddings = ", cfg.max_position_embeddings);
    if (in.attention_mask.data()) check_shape(op, "attention_mask", in.attention_mask, {B, Tn});
  }
  const index_t Lq = in.queries ? m.config().num_query_tokens : 0;
  const index_t P = in.prefix ? in.prefix->Lq : 0;
  if (in.prefix)
    BLIP2_CHECK(in.prefix->B == B && P > 0 && in.prefix->T_text == 0, shape_error, op, ": the prefix pass has batch ",
                in.prefix->B, ", ", P, " query rows and ", in.prefix->T_text,
                " text rows; a queries-only pass of this pass's batch ", B, " is needed");
  index_t N = 0;
  if (in.queries) {
    BLIP2_CHECK(in.image != nullptr, value_error, op, ": a pass with queries needs the image K/V (encode_image_kv)");
    N = in.image->N;
    if (in.image_index.empty())
      BLIP2_CHECK(in.image->B == B, shape_error, op, ": ", in.image->B, " images for a batch of ", B,
                  " (give image_index to pair them)");
    else
      BLIP2_CHECK(static_cast<index_t>(in.image_index.size()) == B, shape_error, op, ": image_index has ",
                  in.image_index.size(), " entries for a batch of ", B);
    for (index_t i : in.image_index)
      BLIP2_CHECK(i >= 0 && i < in.image->B, value_error, op, ": image_index ", i, " outside [0, ", in.image->B, ")");
  }
  const index_t L = Lq + Tn, S = P + L;
  if (in.output_positions != 0) {
    BLIP2_CHECK(in.output_positions >= std::max<index_t>(Lq, 1) && in.output_positions <= L, value_error, op,
                ": output_positions = ", in.output_positions, " must be 0 (all) or in [", std::max<index_t>(Lq, 1),
                ", L = ", L, "] (the query positions are always computed)");
    BLIP2_CHECK(!in.prefix && in.attention == qformer_attention::bidirectional, value_error, op,
                ": output_positions needs a bidirectional pass without a cached K/V prefix");
  }
  const index_t R = in.output_positions != 0 ? in.output_positions : L;
  st.in = in;
  st.B = B, st.Lq = Lq, st.T_text = Tn, st.L = L, st.P = P, st.S = S, st.N = N, st.R = R;

  // every attention_mask value is 0 or 1, every id in the vocabulary (skipped rows' too)
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t) {
      const index_t id = in.input_ids(b, t);
      BLIP2_CHECK(id >= 0 && id < cfg.vocab_size, value_error, op, ": input_ids(", b, ", ", t, ") = ", id,
                  " is outside the vocabulary [0, vocab_size = ", cfg.vocab_size, ")");
      if (in.attention_mask.data()) {
        const index_t mval = in.attention_mask(b, t);
        BLIP2_CHECK(mval == 0 || mval == 1, value_error, op, ": attention_mask(", b, ", ", t, ") = ", mval,
                    " must be 0 or 1");
      }
    }
  auto masked = [&](index_t b, index_t t) { return in.attention_mask.data() && in.attention_mask(b, t) == 0; };

  // ---- which rows are computed ----
  if (in.skip_padding && Tn > 0 && in.attention_mask.data()) {
    // an element with no key left to attend to keeps every row (see the header)
    std::vector<char> keep_all(static_cast<std::size_t>(B), 0);
    for (index_t b = 0; b < B; ++b) {
      bool any = P + Lq > 0;
      for (index_t t = 0; t < Tn && !any; ++t) any = !masked(b, t);
      keep_all[static_cast<std::size_t>(b)] = !any;
    }
    st.plan = row_plan<Space>(B, L, R, [&](index_t b, index_t p) {
      return p < Lq || keep_all[static_cast<std::size_t>(b)] || !masked(b, p - Lq);
    });
  } else {
    st.plan = row_plan<Space>(B, L, R);
  }
  // ---- the embedding-table row (query token or text position) and text id of each computed row ----
  const index_t Lp = st.plan.rows();
  st.pos.host.resize(static_cast<std::size_t>(Lp));
  st.ids.host.resize(static_cast<std::size_t>(Lp - Lq * B));
  for (index_t p = 0; p < L; ++p)
    for (index_t r = st.plan.rows_before(p); r < st.plan.rows_before(p + 1); ++r) {
      st.pos.host[static_cast<std::size_t>(r)] = p < Lq ? p : p - Lq;
      if (p < Lq) continue;
      const index_t b = st.plan.packed() ? st.plan.padded_rows()[static_cast<std::size_t>(r)] % B : r - p * B;
      st.ids.host[static_cast<std::size_t>(r - Lq * B)] = in.input_ids(b, p - Lq);
    }
  st.image_rows.host.assign(in.image_index.begin(), in.image_index.end());
  // ---- key padding (B, S): prefix and query keys are always kept ----
  st.key_padding_host.resize(static_cast<std::size_t>(B * S));
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s) {
      const index_t t = s - P - Lq;  // text position of key s
      st.key_padding_host[static_cast<std::size_t>(b * S + s)] =
          t >= 0 && in.attention_mask.data() ? static_cast<T>(in.attention_mask(b, t)) : T(1);
    }
}

// The host lists in the backend's memory (nothing to do on a host backend).
template <backend Be, class T, memory_space Space>
void upload_pass(Be& be, qformer_pass_state<T, Space>& st) {
  st.plan.upload(be);
  st.ids.upload(be);
  st.pos.upload(be);
  st.image_rows.upload(be);
  copy_from_host(be, st.key_padding, tensor_view<const T, 2>(st.key_padding_host.data(), {st.B, st.S}));
}

}  // namespace detail

// Run a pass: fills st with every activation; returns nothing (st.output() is the result).
template <backend Be, class T, memory_space Space>
void qformer_forward(Be& be, const qformer_model<T, Space>& m, qformer_pass_state<T, Space>& st, const qformer_pass_inputs<T, Space>& in) {
  const auto& cfg = m.config().qformer;
  detail::plan_pass(m, st, in);
  const index_t B = st.B, Lq = st.Lq, Tn = st.T_text, L = st.L, S = st.S, N = st.N;
  const index_t C = cfg.hidden_size, F = cfg.intermediate_size, NH = cfg.num_attention_heads, Lp = st.plan.rows();
  const bool gather = Lq > 0 && !in.image_index.empty();

  // ---- storage ----
  const std::size_t NL = m.w.layers.size();
  lay_out(st.storage, [&](auto& a) {
    st.key_padding = a.template take<2>({B, S});
    st.emb = a.template take<2>({Lp, C});
    st.x0 = a.template take<2>({Lp, C});
    st.emb_mean = a.template take<1>({Lp});
    st.emb_rstd = a.template take<1>({Lp});
    st.layers.assign(NL, {});
    for (std::size_t l = 0; l < NL; ++l) {
      auto& ls = st.layers[l];
      const bool last = l + 1 == NL;
      const index_t n = st.plan.out_rows(last);
      attention_block_layout(a, ls.self, norm_placement::post, B, Lp, n, st.plan.out_positions(last), S, C, NH);
      if (m.w.layers[l].has_cross && Lq > 0) {
        attention_block_layout(a, ls.cross, norm_placement::post, B, Lq * B, Lq * B, Lq, N, C, NH);
        if (gather) {
          ls.ck = a.template take<3>({B, N, C});
          ls.cv = a.template take<3>({B, N, C});
        }
      }
      feed_forward_layout(a, ls.ffn, norm_placement::post, Lp, C, F);  // output() views all Lp rows
    }
    st.scratch.lay_out(a, B, L, S, Lp, C, F, st.plan.packed());
    st.g_out = a.template take<2>({Lp, C});
    st.g_x = a.template take<2>({Lp, C});
    st.g_h = a.template take<2>({Lp, C});
    st.g_ck = st.g_cv = {};
    if (gather) {
      st.g_ck = a.template take<3>({B, N, C});
      st.g_cv = a.template take<3>({B, N, C});
    }
    st.out_padded = st.plan.packed() ? a.template take<2>({L * B, C}) : tensor_view<T, 2, Space>{};
  });
  // the caches: a queries-only pass keeps its keys' gradients (a cached-K/V pass may fork it)
  st.cache.reserve(static_cast<index_t>(NL), B, S, C, Lq > 0 && Tn == 0);
  if (in.prefix) st.cache.fork_from(be, in.prefix->cache);

  detail::upload_pass(be, st);

  // ---- embeddings: x0 = dropout(LayerNorm([query_tokens ; word_emb[ids] + pos_emb])), computed rows ----
  const auto c = detail::layer_context(m, st);
  if (Lq > 0) {
    // query rows: query_tokens[q] for every b (a broadcast copy)
    const tensor_view<const T, 3, Space> qt(m.w.query_tokens.data(), {Lq, B, C}, {C, 0, 1});
    copy(be, tensor_view<T, 3, Space>(st.emb.data(), {Lq, B, C}), qt);
  }
  if (Tn > 0) {
    const index_t first = Lq * B;  // text rows [first, Lp)
    embedding_forward(be, row_range(st.emb, first, Lp), st.ids.view(), m.w.word_embeddings);
    for (index_t t = 0; t < Tn; ++t) {  // position t for every computed row of it: a broadcast row
      const index_t r0 = st.plan.rows_before(Lq + t), r1 = st.plan.rows_before(Lq + t + 1);
      if (r1 == r0) continue;
      const tensor_view<const T, 2, Space> pos(m.w.position_embeddings.data() + t * C, {r1 - r0, C}, {0, 1});
      axpy(be, row_range(st.emb, r0, r1), pos);
    }
  }
  layer_norm_forward(be, st.x0, layer_norm_cache<T, Space>{st.emb_mean, st.emb_rstd}, st.emb, m.w.embed_norm.weight,
                     m.w.embed_norm.bias, cfg.layer_norm_eps);
  if (c.hidden_p() > 0) dropout_forward(be, st.x0, st.x0, c.hidden_p(), c.site_seed(-1, c.embed_site));

  // ---- layers ----
  for (std::size_t l = 0; l < NL; ++l) {
    const auto x = detail::as_const(l == 0 ? st.x0 : st.layers[l - 1].ffn.out);
    qformer_layer_forward(be, m.w.layers[l], st.layers[l], st.cache.layers[l], x, static_cast<index_t>(l), c);
  }
  if (st.plan.packed()) {  // the output in the attention layout, skipped rows (and rows a truncated layer left) 0
    const auto last = NL ? st.layers.back().ffn.out : st.x0;
    st.plan.unpack(be, st.out_padded, detail::as_const(row_range(last, 0, st.plan.out_rows(true))));
  }
}

// Backward of a pass given dout (L B, C) = d(st.output()). Parameter gradients accumulate into m.g,
// image K/V gradients into the image state's dk/dv, prefix K/V gradients into the prefix pass's cache.
template <backend Be, class T, memory_space Space>
void qformer_backward(Be& be, qformer_model<T, Space>& m, qformer_pass_state<T, Space>& st, tensor_view<const T, 2, Space> dout) {
  const auto& cfg = m.config().qformer;
  const index_t B = st.B, Lq = st.Lq, L = st.L, Lp = st.plan.rows(), C = cfg.hidden_size;
  detail::check_shape("qformer_backward", "dout", dout, {L * B, C});
  const auto c = detail::layer_context(m, st);
  const std::size_t NL = st.layers.size();

  // d(output) on the computed rows
  tensor_view<T, 2, Space> dcur = st.g_out, dnext = st.g_x;  // d(layer output), d(layer input)
  if (st.plan.packed())
    st.plan.pack(be, dcur, dout);
  else
    copy(be, dcur, dout);
  for (std::size_t l = NL; l-- > 0;) {
    const auto x = detail::as_const(l == 0 ? st.x0 : st.layers[l - 1].ffn.out);
    qformer_layer_backward(be, m.w.layers[l], m.g.layers[l], st.layers[l], st.cache.layers[l], x,
                           detail::as_const(dcur), dnext, st.g_h, static_cast<index_t>(l), c);
    std::swap(dcur, dnext);  // d(x) is the previous layer's d(out)
  }

  // ---- embeddings ----
  // x0 = dropout(layer_norm(emb))
  tensor_view<T, 2, Space> dx0 = dcur;
  if (c.hidden_p() > 0) {
    dropout_backward(be, dnext, detail::as_const(dcur), c.hidden_p(), c.site_seed(-1, c.embed_site));
    dx0 = dnext;
  }
  const auto demb = row_range(st.scratch.d_sum, 0, Lp);
  layer_norm_backward(be, demb, m.g.embed_norm.weight, m.g.embed_norm.bias, detail::as_const(dx0), st.emb,
                      m.w.embed_norm.weight, layer_norm_cache<T, Space>{st.emb_mean, st.emb_rstd});
  // Row r of the embeddings reads row pos[r] of a table (query_tokens for the query rows, the position
  // embeddings for the text rows): the table's gradient is an embedding backward over those indices,
  // one call each (rows of one position summed in row order).
  if (Lq > 0)
    embedding_backward(be, tensor_view<T, 2, Space>(m.g.query_tokens.data(), {Lq, C}),
                       detail::as_const(row_range(demb, 0, Lq * B)), st.pos.view(0, Lq * B));
  if (st.T_text > 0) {
    // emb text rows = word_emb[ids] + pos_emb[t]
    const auto dtext = detail::as_const(row_range(demb, Lq * B, Lp));  // (computed text rows, C)
    embedding_backward(be, m.g.word_embeddings, dtext, st.ids.view(),
                       cfg.pad_token_id ? *cfg.pad_token_id : index_t{-1});
    embedding_backward(be, m.g.position_embeddings, dtext, st.pos.view(Lq * B, Lp));
  }
}

}  // namespace blip2
