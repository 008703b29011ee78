// blip2/nn/qformer.hpp: the Querying Transformer, forward and backward, and the passes of BLIP-2.
//
// Dimensions: B batch (pairs), Q learned queries, T text tokens, N image tokens, E image width,
//             C hidden, NH heads, F FFN width, V vocabulary, P prefix (cached query K/V) length,
//             Lq = Q or 0 query rows in a pass, L = Lq + T sequence length, S = P + L keys.
//
// The model (post-LN BERT, LAVIS / Hugging Face semantics, see ../shared/DESIGN.md):
//   x    = LayerNorm([query_tokens ; word_emb[ids] + pos_emb[0..T)])      qformer.layernorm, then dropout
//   layer l:
//     h1 = LayerNorm(dropout(dense(attention(x Wq, x Wk, x Wv, mask))) + x)        every position
//     h2 = LayerNorm(dropout(dense(attention(h1 Wq', img Wk', img Wv'))) + h1)     query rows, l % freq == 0
//     out = LayerNorm(dropout(W2 gelu(W1 h + b1) + b2) + h)                        query rows: *_query FFN,
//                                                                                  text rows: text FFN
// Activations are SEQUENCE-MAJOR: row p * B + b holds position p of batch element b, so the query rows
// of every batch element are one dense block [0, Lq B) and the text rows the next one; row-wise ops
// (linear, LayerNorm, GELU) run once per block with large matrices, and attention sees the same buffers
// as (B, L, C) views with strides (C, B C, 1).
//
// The image side is shared: encode_image_kv() computes each cross-attention layer's keys and values once
// per image (the ITM pairs reuse them through an index), and encode_image_kv_backward() turns their
// accumulated gradients into the gradients of the image embeddings and of the key/value weights.
//
// Passes (each a qformer_pass_state filled by qformer_forward, undone by qformer_backward):
//   image pass         queries only, cross-attention to the image                    (ITC image side)
//   text pass          text only, padding mask                                        (ITC text side)
//   joint pass         [queries ; text], bidirectional or multimodal-causal, cross-attention on queries
//   cached-K/V pass    text only, keys/values prefixed by an image pass's query K/V, causal{P}
//                      (ITG training: equals the multimodal-causal joint pass on the text rows)
// Parameter gradients accumulate into model.g; gradients of an image pass's K/V used as a prefix are
// added to that pass's dk_extra/dv_extra, so run the cached-K/V pass's backward before the image pass's.
//
// Reading only the first positions (qformer_pass_inputs::output_positions = R > 0, bidirectional passes
// without a prefix): the ITM head reads the query positions of a joint pass and ITC the [CLS] position
// of a text pass, and in the last layer nothing else depends on the other positions except through
// their keys and values. So the last layer projects K and V for all L positions but computes queries,
// attention, the output dense, the LayerNorms and the FFN for positions [0, R) only. Output rows
// [R B, L B) are then left unset, and backward reads only rows [0, R B) of dout. The rows it keeps are
// the same function of the inputs as in the full pass; one thing differs under attention dropout: the
// last layer's probs are (B, NH, R, S), so its dropout mask is drawn over that shape (an equally valid
// mask, not the full pass's mask restricted). Savings at BLIP-2 size (12 layers, Q = T = 32): about 4%
// of a stage-1 step's FLOP; in the 2-layer demo, half of the ITM pass's text-row work.
//
// Skipping padding (qformer_pass_inputs::skip_padding): a text position whose attention_mask is 0 is a
// key every row masks out, with a score 10000 below the others, so its softmax weight underflows to 0 and
// it changes no other row, forward or backward. If nothing reads its own output, its whole row is dead
// work (LAVIS pads every caption to 32 tokens: at BLIP-2 size a third of the text rows). With the flag,
// row-wise work (embeddings, linears, LayerNorms, FFN) runs on the PACKED rows, the rows kept in
// sequence-major order, and attention runs on the padded layout with zero rows scattered in for the
// skipped ones (gathered back after). The kept rows come out the same as without the flag; skipped rows
// of output() are 0, and backward ignores dout on them. A batch element with no key at all to attend to
// (no queries, no prefix, every text position masked) keeps its rows, so it behaves as without the flag.
// Under hidden dropout the masks are drawn over the packed rows (equally valid, not the same elements).
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/nn/attention.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/dropout.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/models/qformer/masks.hpp"
#include "blip2/nn/qformer_weights.hpp"

namespace blip2 {

// ---------------------------------------------------------------------------------------------------
// The model: parameters and their gradients, two arenas of the same layout.
// ---------------------------------------------------------------------------------------------------
template <class T>
class qformer_model {
 public:
  explicit qformer_model(const qformer_model_config& cfg) : cfg_(validated(cfg)) {
    const index_t n = parameter_count<T>(cfg_);
    params_.assign(static_cast<std::size_t>(n), T{});
    grads_.assign(static_cast<std::size_t>(n), T{});
    w = bind_weights(cfg_, params_.data());
    g = bind_weights(cfg_, grads_.data());
  }
  qformer_model(const qformer_model&) = delete;  // the views point into this object's arenas
  qformer_model& operator=(const qformer_model&) = delete;
  qformer_model(qformer_model&&) = default;      // vectors keep their buffers when moved
  qformer_model& operator=(qformer_model&&) = default;

  const qformer_model_config& config() const { return cfg_; }
  std::span<T> parameters() { return params_; }
  std::span<T> gradients() { return grads_; }
  void zero_grad() { std::fill(grads_.begin(), grads_.end(), T{}); }

  qformer_weights<T> w;  // parameters, by Hugging Face name (for_each_parameter)
  qformer_weights<T> g;  // their gradients

 private:
  static qformer_model_config validated(const qformer_model_config& c) {
    const auto& q = c.qformer;
    BLIP2_CHECK(q.hidden_size > 0 && q.num_attention_heads > 0 && q.hidden_size % q.num_attention_heads == 0,
                value_error, "qformer: hidden_size = ", q.hidden_size, " must be a positive multiple of num_attention_heads = ",
                q.num_attention_heads);
    BLIP2_CHECK(q.num_hidden_layers >= 0 && q.intermediate_size > 0 && q.encoder_hidden_size > 0 &&
                    q.cross_attention_frequency > 0 && c.num_query_tokens > 0 && c.image_text_hidden_size > 0 &&
                    q.vocab_size > 0 && q.max_position_embeddings > 0,
                value_error, "qformer: every size must be positive (and num_hidden_layers >= 0)");
    BLIP2_CHECK(!c.with_stage1_heads || c.with_text, value_error,
                "qformer: the stage-1 heads (ITG LM head, temp) need the text side");
    return c;
  }
  qformer_model_config cfg_;
  std::vector<T> params_, grads_;
};

// ---------------------------------------------------------------------------------------------------
// Image side: cross-attention keys and values, once per image.
// ---------------------------------------------------------------------------------------------------
template <class T>
struct image_kv_state {
  index_t B = 0, N = 0;
  tensor_view<const T, 3> image;       // (B, N, E): the encoder output, read again by backward
  std::vector<tensor_view<T, 3>> k, v;   // per layer (B, N, C); empty views where a layer has no cross
  std::vector<tensor_view<T, 3>> dk, dv; // their gradients, accumulated by every pass that reads them
  std::vector<T> storage;
};

namespace detail {
template <class T>
tensor_view<T, 2> rows_of(const tensor_view<T, 3>& v) {  // (B, N, C) dense -> (B N, C)
  return {v.data(), {v.extent(0) * v.extent(1), v.extent(2)}};
}

// The image K or V of each pair: dst[b] = src[index[b]], (N, C) blocks. One embedding lookup over rows of
// N C floats when both are dense (one kernel call instead of B copies); block by block otherwise.
template <class Be, class T>
void gather_images(Be& be, tensor_view<T, 3> dst, tensor_view<T, 3> src, std::span<const index_t> index) {
  const index_t B = dst.extent(0), NC = dst.extent(1) * dst.extent(2);
  if (dst.is_contiguous() && src.is_contiguous()) {
    embedding_forward(be, tensor_view<T, 2>(dst.data(), {B, NC}), tensor_view<const index_t, 1>(index.data(), {B}),
                      tensor_view<const T, 2>(src.data(), {src.extent(0), NC}));
    return;
  }
  for (index_t b = 0; b < B; ++b) copy(be, slice(dst, b), slice(src, index[static_cast<std::size_t>(b)]));
}

// Their gradients back: dsrc[index[b]] += ddst[b] (pairs sharing an image add up, in pair order).
template <class Be, class T>
void scatter_add_images(Be& be, tensor_view<T, 3> dsrc, tensor_view<T, 3> ddst, std::span<const index_t> index) {
  const index_t B = ddst.extent(0), NC = ddst.extent(1) * ddst.extent(2);
  if (dsrc.is_contiguous() && ddst.is_contiguous()) {
    embedding_backward(be, tensor_view<T, 2>(dsrc.data(), {dsrc.extent(0), NC}),
                       tensor_view<const T, 2>(ddst.data(), {B, NC}), tensor_view<const index_t, 1>(index.data(), {B}));
    return;
  }
  for (index_t b = 0; b < B; ++b) axpy(be, slice(dsrc, index[static_cast<std::size_t>(b)]), slice(ddst, b));
}
}  // namespace detail

// k[l], v[l] = image W_k', image W_v' for every cross-attention layer; zeroes their gradients.
template <backend Be, class T, class Img>
void encode_image_kv(Be& be, const qformer_model<T>& m, image_kv_state<T>& st, Img&& image_embeds) {
  const auto& cfg = m.config().qformer;
  auto img = detail::as_const(detail::arg_view<Be, 3>(image_embeds));  // (B, N, E)
  static_assert(std::is_same_v<typename decltype(img)::value_type, T>, "encode_image_kv: image_embeds has another element type than the model");
  BLIP2_CHECK(img.extent(2) == cfg.encoder_hidden_size, shape_error, "qformer: image_embeds has shape ",
              shape_string(img), " but its last dimension must be encoder_hidden_size = ", cfg.encoder_hidden_size);
  BLIP2_CHECK(img.is_contiguous(), shape_error, "qformer: image_embeds of shape ", shape_string(img), " must be contiguous");
  BLIP2_CHECK(img.extent(1) > 0, shape_error, "qformer: image_embeds has shape ", shape_string(img),
              ": cross-attention needs at least one image token (N >= 1)");
  const index_t B = img.extent(0), N = img.extent(1), C = cfg.hidden_size;
  const std::size_t L = m.w.layers.size();
  st.B = B;
  st.N = N;
  st.image = img;
  lay_out(st.storage, [&](auto& a) {
    st.k.assign(L, {});
    st.v.assign(L, {});
    st.dk.assign(L, {});
    st.dv.assign(L, {});
    for (std::size_t l = 0; l < L; ++l) {
      if (!m.w.layers[l].has_cross) continue;
      st.k[l] = a.template take<3>({B, N, C});
      st.v[l] = a.template take<3>({B, N, C});
      st.dk[l] = a.template take<3>({B, N, C});
      st.dv[l] = a.template take<3>({B, N, C});
    }
  });
  const auto img_rows = detail::rows_of(img);  // (B N, E)
  for (std::size_t l = 0; l < L; ++l) {
    const auto& cw = m.w.layers[l].cross;
    if (!m.w.layers[l].has_cross) continue;
    linear_forward(be, detail::rows_of(st.k[l]), img_rows, cw.key.weight, cw.key.bias);      // (B N, C)
    linear_forward(be, detail::rows_of(st.v[l]), img_rows, cw.value.weight, cw.value.bias);  // (B N, C)
    std::fill(st.dk[l].data(), st.dk[l].data() + st.dk[l].size(), T{});
    std::fill(st.dv[l].data(), st.dv[l].data() + st.dv[l].size(), T{});
  }
}

// From the accumulated dk, dv: the key/value weight gradients and dimage (added; an empty view skips it).
template <backend Be, class T>
void encode_image_kv_backward(Be& be, qformer_model<T>& m, image_kv_state<T>& st, tensor_view<T, 3> dimage = {}) {
  if (dimage.data())
    detail::check_shape("encode_image_kv_backward", "dimage", dimage, st.image.extents());
  const auto img_rows = detail::rows_of(st.image);                                      // (B N, E)
  const tensor_view<T, 2> drows = dimage.data() ? detail::rows_of(dimage) : tensor_view<T, 2>{};
  for (std::size_t l = 0; l < m.w.layers.size(); ++l) {
    if (!m.w.layers[l].has_cross) continue;
    const auto& cw = m.w.layers[l].cross;
    auto& cg = m.g.layers[l].cross;
    // k = image W_k' + b ; v = image W_v' + b
    linear_backward(be, drows, cg.key.weight, cg.key.bias, detail::rows_of(st.dk[l]), img_rows, cw.key.weight,
                    grad_write::accumulate);
    linear_backward(be, drows, cg.value.weight, cg.value.bias, detail::rows_of(st.dv[l]), img_rows, cw.value.weight,
                    grad_write::accumulate);
  }
}

// ---------------------------------------------------------------------------------------------------
// A pass: what it is, and everything its backward needs.
// ---------------------------------------------------------------------------------------------------
enum class qformer_attention { bidirectional, multimodal_causal };

template <class T>
struct qformer_pass_state;

template <class T>
struct qformer_pass_inputs {
  index_t batch = 0;                                 // B
  bool queries = false;                              // include the Q learned queries
  tensor_view<const index_t, 2> input_ids;           // (B, T) or empty: no text
  tensor_view<const index_t, 2> attention_mask;      // (B, T) of 0/1, or empty: all ones
  qformer_attention attention = qformer_attention::bidirectional;
  image_kv_state<T>* image = nullptr;                // cross-attention source (needed when queries)
  std::span<const index_t> image_index;              // image of each batch element; empty: b -> b
  qformer_pass_state<T>* prefix = nullptr;           // an image pass whose query K/V prefix the keys (ITG)
  bool training = false;                             // dropout as the config says; off in evaluation
  std::uint64_t seed = 0;                            // dropout seed of this pass
  index_t output_positions = 0;                      // R > 0: the last layer computes positions [0, R) only
                                                     // (see the header); 0: all L positions
  bool skip_padding = false;                         // do not compute text rows whose attention_mask is 0
                                                     // (see the header); their output rows are 0
};

// Rows: "padded" is the (L B) sequence-major layout attention sees; row-wise work runs on the Lp packed
// rows (the padded rows, less skipped padding: see skip_padding). Without skipping the two are the same.
template <class T>
struct qformer_layer_state {
  tensor_view<T, 2> q;                   // (L B, C) padded
  tensor_view<T, 2> k, v;                // (S B, C) padded: rows [0, P B) the prefix's, then this pass's
  tensor_view<T, 4> probs;               // (B, NH, L, S)
  tensor_view<T, 2> ctx, sum1, h1;       // (Lp, C) packed, as every (Lp, .) buffer below
  tensor_view<T, 1> mean1, rstd1;        // (Lp)
  tensor_view<T, 3> ck, cv;              // (B, N, C): the image K/V of each batch element (gathered or shared)
  tensor_view<T, 2> cq, cctx, sum2, h2;  // (Lq B, C)
  tensor_view<T, 4> cprobs;              // (B, NH, Lq, N)
  tensor_view<T, 1> mean2, rstd2;        // (Lq B)
  tensor_view<T, 2> inter, act;          // (Lp, F)
  tensor_view<T, 2> sum3, out;           // (Lp, C)
  tensor_view<T, 1> mean3, rstd3;        // (Lp)
  tensor_view<T, 2> dk_extra, dv_extra;  // (Lq B, C): gradient of this pass's query K/V from a pass
                                         // that used them as its prefix
};

template <class T>
struct qformer_pass_state {
  qformer_pass_inputs<T> in;
  index_t B = 0, Lq = 0, T_text = 0, L = 0, P = 0, S = 0, N = 0;
  index_t R = 0;                         // positions the last layer computes (L unless output_positions)
  index_t Lp = 0;                        // packed rows (L B unless padding is skipped)
  std::vector<index_t> packed_rows;      // (Lp) padded row of each packed row; empty: packed == padded
  std::vector<index_t> pos_rows;         // (L + 1) packed rows before position p (p B when not packed)
  std::vector<index_t> ids;              // text ids of the packed text rows, sequence-major
  tensor_view<T, 2> key_padding;         // (B, S): 1 keep, 0 pad
  tensor_view<T, 2> emb, x0;             // (Lp, C): embeddings before / after LayerNorm (+ dropout)
  tensor_view<T, 1> emb_mean, emb_rstd;  // (Lp)
  std::vector<qformer_layer_state<T>> layers;
  tensor_view<T, 2> out_padded;          // (L B, C): the output in the padded layout, when packed
  tensor_view<T, 2> p_rows, p_ctx;       // packed: (Lp, C) projections before scattering, (L B, C) ctx
  // backward scratch
  tensor_view<T, 2> g_out, g_x, g_sum, g_h, g_tmp, g_q;  // (Lp, C); g_q (L B, C) padded
  tensor_view<T, 2> g_f, g_f2;                            // (Lp, F)
  tensor_view<T, 2> g_k, g_v;                             // (S B, C) padded
  tensor_view<T, 2> g_c, g_cq;                            // (Lq B, C)
  tensor_view<T, 3> g_ck, g_cv;                           // (B, N, C)
  tensor_view<T, 2> g_pq, g_pk, g_pv;                     // packed: (Lp, C) gradients of q, k, v
  std::vector<T> storage;

  bool packed() const { return !packed_rows.empty(); }
  // The last layer's output, sequence-major (L B, C); rows [0, Lq B) are the queries. Only rows [0, R B)
  // are set when the pass was run with output_positions, and skipped padding rows are 0.
  tensor_view<T, 2> output() const { return packed() ? out_padded : layers.empty() ? x0 : layers.back().out; }
  // The same as (B, L, C) (a strided view, no copy).
  tensor_view<T, 3> output_by_batch() const { return {output().data(), {B, L, output().extent(1)}, {output().extent(1), B * output().extent(1), 1}}; }
};

namespace detail {

// zero a dense view (a block of rows of a pass buffer)
template <class T>
void zero(const tensor_view<T, 2>& v) {
  std::fill(v.data(), v.data() + v.size(), T{});
}
// packed rows -> padded layout: row rows[i] of padded = row i of packed, every other row 0 (a skipped
// row, or one a truncated last layer did not compute): a scatter, embedding_backward into zeros
template <class Be, class T>
void unpack_rows(Be& be, const tensor_view<T, 2>& padded, const tensor_view<const T, 2>& packed,
                 std::span<const index_t> rows) {
  zero(padded);
  embedding_backward(be, padded, packed, tensor_view<const index_t, 1>(rows.data(), {packed.extent(0)}));
}
// padded layout -> packed rows: row i of packed = row rows[i] of padded, a gather (embedding_forward)
template <class Be, class T>
void pack_rows(Be& be, const tensor_view<T, 2>& packed, const tensor_view<const T, 2>& padded,
               std::span<const index_t> rows) {
  embedding_forward(be, packed, tensor_view<const index_t, 1>(rows.data(), {packed.extent(0)}), padded);
}
// rows [r0, r1) of a (R, X) view
template <class T>
tensor_view<T, 2> row_range(const tensor_view<T, 2>& v, index_t r0, index_t r1) {
  return {v.data() + r0 * v.stride(0), {r1 - r0, v.extent(1)}, v.strides()};
}
template <class T>
tensor_view<T, 1> row_range(const tensor_view<T, 1>& v, index_t r0, index_t r1) {
  return {v.data() + r0 * v.stride(0), {r1 - r0}, v.strides()};
}
// (len B, C) sequence-major rows as (B, len, C)
template <class T>
tensor_view<T, 3> by_batch(const tensor_view<T, 2>& rows, index_t B) {
  const index_t C = rows.extent(1);
  return {rows.data(), {B, rows.extent(0) / B, C}, {C, B * C, 1}};
}
// A seed for dropout site `site` of layer `layer` in a pass seeded with `seed`.
inline std::uint64_t site_seed(std::uint64_t seed, index_t layer, int site) {
  const auto r = random_bits(seed, static_cast<std::uint64_t>(layer + 1) * 16u + static_cast<std::uint64_t>(site));
  return (static_cast<std::uint64_t>(r[0]) << 32) | r[1];
}
enum dropout_site : int { embed_site = 0, self_probs, self_out, cross_probs, cross_out, ffn_out };

// Calls f(policy) with the pass's self-attention mask policy.
template <class T, class F>
void with_self_mask(const qformer_pass_state<T>& st, F&& f) {
  if (st.P > 0)
    f(causal{st.P});
  else if (st.in.attention == qformer_attention::multimodal_causal)
    f(multimodal_causal_mask{st.Lq});
  else
    f(bidirectional{});
}

}  // namespace detail

// Run a pass: fills st with every activation; returns nothing (st.output() is the result).
template <backend Be, class T>
void qformer_forward(Be& be, const qformer_model<T>& m, qformer_pass_state<T>& st, const qformer_pass_inputs<T>& in) {
  constexpr std::string_view op = "qformer_forward";
  const auto& cfg = m.config().qformer;
  const index_t B = in.batch, C = cfg.hidden_size, F = cfg.intermediate_size, NH = cfg.num_attention_heads;
  const bool text = in.input_ids.data() != nullptr;
  BLIP2_CHECK(B > 0, value_error, op, ": batch must be positive, got ", B);
  BLIP2_CHECK(in.queries || text, value_error, op, ": a pass needs queries, text, or both");
  BLIP2_CHECK(!text || m.config().with_text, value_error, op,
              ": this model has no text side (a Blip2ForConditionalGeneration checkpoint): text passes are unavailable");
  BLIP2_CHECK(!(in.prefix && in.queries), value_error, op, ": a pass over a cached K/V prefix is text only");
  const index_t Tn = text ? in.input_ids.extent(1) : 0;
  if (text) {
    detail::check_shape(op, "input_ids", in.input_ids, {B, Tn});
    BLIP2_CHECK(Tn <= cfg.max_position_embeddings, shape_error, op, ": input_ids has ", Tn,
                " tokens, more than max_position_embeddings = ", cfg.max_position_embeddings);
    if (in.attention_mask.data()) detail::check_shape(op, "attention_mask", in.attention_mask, {B, Tn});
  }
  const index_t Lq = in.queries ? m.config().num_query_tokens : 0;
  const index_t P = in.prefix ? in.prefix->Lq : 0;
  if (in.prefix)
    BLIP2_CHECK(in.prefix->B == B && P > 0, shape_error, op, ": the prefix pass has batch ", in.prefix->B, " and ",
                P, " query rows; this pass has batch ", B);
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
  const bool gather = in.queries && !in.image_index.empty();
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

  // ---- which rows are computed: the packed rows (attention_mask values are checked below) ----
  st.packed_rows.clear();
  st.pos_rows.resize(static_cast<std::size_t>(L + 1));
  if (in.skip_padding && Tn > 0 && in.attention_mask.data()) {
    // an element with no key left to attend to keeps every row (see the header)
    std::vector<char> keep_all(static_cast<std::size_t>(B), 0);
    for (index_t b = 0; b < B; ++b) {
      bool any = P + Lq > 0;
      for (index_t t = 0; t < Tn && !any; ++t) any = in.attention_mask(b, t) == 1;
      keep_all[static_cast<std::size_t>(b)] = !any;
    }
    for (index_t p = 0; p < L; ++p) {
      st.pos_rows[static_cast<std::size_t>(p)] = static_cast<index_t>(st.packed_rows.size());
      for (index_t b = 0; b < B; ++b)
        if (p < Lq || keep_all[static_cast<std::size_t>(b)] || in.attention_mask(b, p - Lq) == 1)
          st.packed_rows.push_back(p * B + b);
    }
    if (static_cast<index_t>(st.packed_rows.size()) == L * B) st.packed_rows.clear();  // nothing to skip
  }
  const bool packed = st.packed();
  if (!packed)
    for (index_t p = 0; p < L; ++p) st.pos_rows[static_cast<std::size_t>(p)] = p * B;
  const index_t Lp = packed ? static_cast<index_t>(st.packed_rows.size()) : L * B;
  st.pos_rows[static_cast<std::size_t>(L)] = Lp;
  st.Lp = Lp;

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
      ls.q = a.template take<2>({L * B, C});
      ls.k = a.template take<2>({S * B, C});
      ls.v = a.template take<2>({S * B, C});
      ls.probs = a.template take<4>({B, NH, l + 1 == NL ? R : L, S});
      ls.ctx = a.template take<2>({Lp, C});
      ls.sum1 = a.template take<2>({Lp, C});
      ls.h1 = a.template take<2>({Lp, C});
      ls.mean1 = a.template take<1>({Lp});
      ls.rstd1 = a.template take<1>({Lp});
      if (m.w.layers[l].has_cross && Lq > 0) {
        if (gather) {
          ls.ck = a.template take<3>({B, N, C});
          ls.cv = a.template take<3>({B, N, C});
        }
        ls.cq = a.template take<2>({Lq * B, C});
        ls.cctx = a.template take<2>({Lq * B, C});
        ls.sum2 = a.template take<2>({Lq * B, C});
        ls.h2 = a.template take<2>({Lq * B, C});
        ls.cprobs = a.template take<4>({B, NH, Lq, N});
        ls.mean2 = a.template take<1>({Lq * B});
        ls.rstd2 = a.template take<1>({Lq * B});
      }
      ls.inter = a.template take<2>({Lp, F});
      ls.act = a.template take<2>({Lp, F});
      ls.sum3 = a.template take<2>({Lp, C});
      ls.out = a.template take<2>({Lp, C});
      ls.mean3 = a.template take<1>({Lp});
      ls.rstd3 = a.template take<1>({Lp});
      if (Lq > 0) {
        ls.dk_extra = a.template take<2>({Lq * B, C});
        ls.dv_extra = a.template take<2>({Lq * B, C});
      }
    }
    for (auto* g : {&st.g_out, &st.g_x, &st.g_sum, &st.g_h, &st.g_tmp}) *g = a.template take<2>({Lp, C});
    st.g_q = a.template take<2>({L * B, C});
    st.g_f = a.template take<2>({Lp, F});
    st.g_f2 = a.template take<2>({Lp, F});
    st.g_k = a.template take<2>({S * B, C});
    st.g_v = a.template take<2>({S * B, C});
    st.g_c = a.template take<2>({Lq * B, C});
    st.g_cq = a.template take<2>({Lq * B, C});
    if (gather) {
      st.g_ck = a.template take<3>({B, N, C});
      st.g_cv = a.template take<3>({B, N, C});
    }
    st.out_padded = st.p_rows = st.p_ctx = st.g_pq = st.g_pk = st.g_pv = {};
    if (packed) {
      st.out_padded = a.template take<2>({L * B, C});
      st.p_rows = a.template take<2>({Lp, C});
      st.p_ctx = a.template take<2>({L * B, C});
      for (auto* g : {&st.g_pq, &st.g_pk, &st.g_pv}) *g = a.template take<2>({Lp, C});
    }
  });
  for (auto& ls : st.layers)
    if (ls.dk_extra.data()) {
      std::fill(ls.dk_extra.data(), ls.dk_extra.data() + ls.dk_extra.size(), T{});
      std::fill(ls.dv_extra.data(), ls.dv_extra.data() + ls.dv_extra.size(), T{});
    }
  const std::span<const index_t> prow(st.packed_rows);

  // ---- key padding (B, S): prefix and query keys are always kept ----
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s) {
      const index_t t = s - P - Lq;  // text position of key s
      T keep = 1;
      if (t >= 0 && in.attention_mask.data()) {
        const index_t mval = in.attention_mask(b, t);
        BLIP2_CHECK(mval == 0 || mval == 1, value_error, op, ": attention_mask(", b, ", ", t, ") = ", mval,
                    " must be 0 or 1");
        keep = static_cast<T>(mval);
      }
      st.key_padding(b, s) = keep;
    }

  // ---- embeddings: x0 = dropout(LayerNorm([query_tokens ; word_emb[ids] + pos_emb])), packed rows ----
  const double p_hidden = in.training ? cfg.hidden_dropout_prob : 0.0;
  const double p_attn = in.training ? cfg.attention_probs_dropout_prob : 0.0;
  if (Lq > 0) {
    // query rows: query_tokens[q] for every b (a broadcast copy)
    const tensor_view<const T, 3> qt(m.w.query_tokens.data(), {Lq, B, C}, {C, 0, 1});
    copy(be, tensor_view<T, 3>(st.emb.data(), {Lq, B, C}), qt);
  }
  if (Tn > 0) {
    for (index_t t = 0; t < Tn; ++t)  // every id, skipped rows' too: embedding_forward would name a packed row
      for (index_t b = 0; b < B; ++b) {
        const index_t id = in.input_ids(b, t);
        BLIP2_CHECK(id >= 0 && id < cfg.vocab_size, value_error, op, ": input_ids(", b, ", ", t, ") = ", id,
                    " is outside the vocabulary [0, vocab_size = ", cfg.vocab_size, ")");
      }
    const index_t first = Lq * B;  // packed text rows [first, Lp)
    st.ids.resize(static_cast<std::size_t>(Lp - first));
    for (index_t i = first; i < Lp; ++i) {
      const index_t r = packed ? prow[static_cast<std::size_t>(i)] : i;  // padded row (Lq + t) B + b
      st.ids[static_cast<std::size_t>(i - first)] = in.input_ids(r % B, r / B - Lq);
    }
    const tensor_view<const index_t, 1> ids(st.ids.data(), {Lp - first});
    auto text_rows = detail::row_range(st.emb, first, Lp);
    embedding_forward(be, text_rows, ids, m.w.word_embeddings);
    for (index_t t = 0; t < Tn; ++t) {  // position t for every kept row of it: a broadcast row
      const index_t r0 = st.pos_rows[static_cast<std::size_t>(Lq + t)], r1 = st.pos_rows[static_cast<std::size_t>(Lq + t + 1)];
      if (r1 == r0) continue;
      const tensor_view<const T, 2> pos(m.w.position_embeddings.data() + t * C, {r1 - r0, C}, {0, 1});
      axpy(be, detail::row_range(st.emb, r0, r1), pos);
    }
  }
  layer_norm_forward(be, st.x0, layer_norm_cache<T>{st.emb_mean, st.emb_rstd}, st.emb, m.w.embed_norm.weight,
                     m.w.embed_norm.bias, cfg.layer_norm_eps);
  if (p_hidden > 0) dropout_forward(be, st.x0, st.x0, p_hidden, detail::site_seed(in.seed, -1, detail::embed_site));

  // ---- layers ----
  for (std::size_t li = 0; li < NL; ++li) {
    const index_t l = static_cast<index_t>(li);
    const auto& W = m.w.layers[li];
    auto& ls = st.layers[li];
    const tensor_view<T, 2> x = li == 0 ? st.x0 : st.layers[li - 1].out;  // (Lp, C)
    auto k_own = detail::row_range(ls.k, P * B, S * B);                    // (L B, C) padded
    auto v_own = detail::row_range(ls.v, P * B, S * B);
    // rows this layer computes beyond K/V: all, or positions [0, R) in the last layer
    const bool last = li + 1 == NL;
    const index_t rows = last ? st.pos_rows[static_cast<std::size_t>(R)] : Lp;  // packed
    const index_t prow_q = last ? R * B : L * B;                                // padded query rows
    auto rr = [&](const auto& v) { return detail::row_range(v, 0, rows); };
    // q, k, v = x Wq, x Wk, x Wv into the padded layout; the prefix's cached query K/V come first
    // dst: padded rows to fill; n: the packed rows that map into them (the same rows when not packed)
    auto project = [&](tensor_view<T, 2> dst, index_t n, const auto& w) {
      if (!packed) return linear_forward(be, dst, detail::row_range(x, 0, n), w.weight, w.bias);
      auto tmp = detail::row_range(st.p_rows, 0, n);
      linear_forward(be, tmp, detail::row_range(x, 0, n), w.weight, w.bias);
      detail::unpack_rows(be, dst, detail::as_const(tmp), prow);
    };
    project(detail::row_range(ls.q, 0, prow_q), rows, W.self.query);
    project(k_own, Lp, W.self.key);
    project(v_own, Lp, W.self.value);
    if (P > 0) {
      const auto& pl = in.prefix->layers[li];
      copy(be, detail::row_range(ls.k, 0, P * B), detail::row_range(pl.k, 0, P * B));
      copy(be, detail::row_range(ls.v, 0, P * B), detail::row_range(pl.v, 0, P * B));
    }
    // ctx = attention(q, k, v) under the pass's mask and the key padding (padded layout)
    auto ctx_padded = packed ? detail::row_range(st.p_ctx, 0, prow_q) : rr(ls.ctx);
    detail::with_self_mask(st, [&](const auto& mask) {
      attention_forward(be, detail::by_batch(ctx_padded, B), attention_cache<T>{ls.probs},
                        detail::by_batch(detail::row_range(ls.q, 0, prow_q), B), detail::by_batch(ls.k, B),
                        detail::by_batch(ls.v, B), NH, mask, st.key_padding, p_attn,
                        detail::site_seed(in.seed, l, detail::self_probs));
    });
    if (packed) detail::pack_rows(be, rr(ls.ctx), detail::as_const(ctx_padded), prow);
    // h1 = LayerNorm(dropout(ctx Wd + bd) + x)
    auto sum1 = rr(ls.sum1);
    linear_forward(be, sum1, rr(ls.ctx), W.self.dense.weight, W.self.dense.bias);
    if (p_hidden > 0) dropout_forward(be, sum1, sum1, p_hidden, detail::site_seed(in.seed, l, detail::self_out));
    axpy(be, sum1, rr(x));
    layer_norm_forward(be, rr(ls.h1), layer_norm_cache<T>{rr(ls.mean1), rr(ls.rstd1)}, sum1, W.self.norm.weight,
                       W.self.norm.bias, cfg.layer_norm_eps);
    // query rows: cross-attention to the image
    tensor_view<T, 2> ffn_in_q = detail::row_range(ls.h1, 0, Lq * B);  // (Lq B, C)
    if (W.has_cross && Lq > 0) {
      const auto& img = *in.image;
      if (gather) {
        detail::gather_images(be, ls.ck, img.k[li], in.image_index);
        detail::gather_images(be, ls.cv, img.v[li], in.image_index);
      } else {
        ls.ck = img.k[li];
        ls.cv = img.v[li];
      }
      auto h1q = detail::row_range(ls.h1, 0, Lq * B);
      linear_forward(be, ls.cq, h1q, W.cross.query.weight, W.cross.query.bias);
      attention_forward(be, detail::by_batch(ls.cctx, B), attention_cache<T>{ls.cprobs}, detail::by_batch(ls.cq, B),
                        ls.ck, ls.cv, NH, bidirectional{}, no_padding, p_attn,
                        detail::site_seed(in.seed, l, detail::cross_probs));
      // h2 = LayerNorm(dropout(cctx Wd' + bd') + h1)
      linear_forward(be, ls.sum2, ls.cctx, W.cross.dense.weight, W.cross.dense.bias);
      if (p_hidden > 0)
        dropout_forward(be, ls.sum2, ls.sum2, p_hidden, detail::site_seed(in.seed, l, detail::cross_out));
      axpy(be, ls.sum2, h1q);
      layer_norm_forward(be, ls.h2, layer_norm_cache<T>{ls.mean2, ls.rstd2}, ls.sum2, W.cross.norm.weight,
                         W.cross.norm.bias, cfg.layer_norm_eps);
      ffn_in_q = ls.h2;
    }
    // out = LayerNorm(dropout(gelu(h W1 + b1) W2 + b2) + h), query rows and text rows with their own FFN
    auto ffn = [&](const feed_forward_weights<T>& fw, tensor_view<T, 2> h, index_t r0, index_t r1) {
      if (r1 == r0) return;
      auto inter = detail::row_range(ls.inter, r0, r1), act = detail::row_range(ls.act, r0, r1);
      auto sum = detail::row_range(ls.sum3, r0, r1), out = detail::row_range(ls.out, r0, r1);
      linear_forward(be, inter, h, fw.intermediate.weight, fw.intermediate.bias);
      gelu_forward(be, act, inter);
      linear_forward(be, sum, act, fw.output.weight, fw.output.bias);
      if (p_hidden > 0) dropout_forward(be, sum, sum, p_hidden, detail::site_seed(in.seed, l, detail::ffn_out) + static_cast<std::uint64_t>(r0));
      axpy(be, sum, h);
      layer_norm_forward(be, out, layer_norm_cache<T>{detail::row_range(ls.mean3, r0, r1), detail::row_range(ls.rstd3, r0, r1)},
                         sum, fw.norm.weight, fw.norm.bias, cfg.layer_norm_eps);
    };
    ffn(W.query, ffn_in_q, 0, Lq * B);
    ffn(W.text, detail::row_range(ls.h1, Lq * B, rows), Lq * B, rows);
  }
  if (packed) {  // the output in the padded layout, skipped rows (and rows a truncated layer left) 0
    const tensor_view<T, 2> last = NL ? detail::row_range(st.layers.back().out, 0, st.pos_rows[static_cast<std::size_t>(R)]) : st.x0;
    detail::unpack_rows(be, st.out_padded, detail::as_const(last), prow);
  }
}

// Backward of a pass given dout (L B, C) = d(st.output()). Parameter gradients accumulate into m.g,
// image K/V gradients into the image state's dk/dv, prefix K/V gradients into the prefix pass's
// dk_extra/dv_extra. Returns nothing; dout is read only.
template <backend Be, class T>
void qformer_backward(Be& be, qformer_model<T>& m, qformer_pass_state<T>& st, tensor_view<const T, 2> dout) {
  const auto& cfg = m.config().qformer;
  const auto& in = st.in;
  const index_t B = st.B, Lq = st.Lq, L = st.L, P = st.P, S = st.S, NH = cfg.num_attention_heads;
  const index_t Tn = st.T_text;
  const std::size_t NL = st.layers.size();
  detail::check_shape("qformer_backward", "dout", dout, {L * B, cfg.hidden_size});
  const double p_hidden = in.training ? cfg.hidden_dropout_prob : 0.0;
  const double p_attn = in.training ? cfg.attention_probs_dropout_prob : 0.0;
  const bool gather = Lq > 0 && !in.image_index.empty();
  const bool packed = st.packed();
  const index_t Lp = st.Lp;
  const std::span<const index_t> prow(st.packed_rows);

  tensor_view<T, 2> dcur = st.g_out;  // d(output of the current layer), packed rows
  tensor_view<T, 2> dnext = st.g_x;   // d(input of the current layer)
  if (packed)
    detail::pack_rows(be, dcur, dout, prow);
  else
    copy(be, dcur, dout);
  for (std::size_t li = st.layers.size(); li-- > 0;) {
    const index_t l = static_cast<index_t>(li);
    const auto& W = m.w.layers[li];
    auto& G = m.g.layers[li];
    auto& ls = st.layers[li];
    const tensor_view<T, 2> x = li == 0 ? st.x0 : st.layers[li - 1].out;
    const bool last = li + 1 == NL;  // as in forward
    const index_t rows = last ? st.pos_rows[static_cast<std::size_t>(st.R)] : Lp;
    const index_t prow_q = last ? st.R * B : L * B;
    auto rows_of = [&](const auto& v) { return detail::row_range(v, 0, rows); };

    // ---- FFN, query rows then text rows ----
    // out = LayerNorm(dropout(gelu(h W1 + b1) W2 + b2) + h)  ->  g_h = d(h), the FFN input
    const tensor_view<T, 2> ffn_in_q = (W.has_cross && Lq > 0) ? ls.h2 : detail::row_range(ls.h1, 0, Lq * B);
    auto ffn_back = [&](const feed_forward_weights<T>& fw, feed_forward_weights<T>& fg, tensor_view<T, 2> h,
                        index_t r0, index_t r1) {
      if (r1 == r0) return;
      auto rr = [&](const auto& v) { return detail::row_range(v, r0, r1); };
      // out = layer_norm(sum)
      layer_norm_backward(be, rr(st.g_sum), fg.norm.weight, fg.norm.bias, rr(dcur), rr(ls.sum3), fw.norm.weight,
                          layer_norm_cache<T>{rr(ls.mean3), rr(ls.rstd3)});
      // sum = dropout(act W2 + b2) + h: the residual passes d(sum) to h
      copy(be, rr(st.g_h), rr(st.g_sum));
      tensor_view<T, 2> ddense = rr(st.g_sum);
      if (p_hidden > 0) {
        dropout_backward(be, rr(st.g_tmp), rr(st.g_sum), p_hidden,
                         detail::site_seed(in.seed, l, detail::ffn_out) + static_cast<std::uint64_t>(r0));
        ddense = rr(st.g_tmp);
      }
      // act W2 + b2
      auto gf = detail::row_range(st.g_f, r0, r1), gf2 = detail::row_range(st.g_f2, r0, r1);
      linear_backward(be, gf, fg.output.weight, fg.output.bias, ddense, rr(ls.act), fw.output.weight);
      // act = gelu(inter)
      gelu_backward(be, gf2, gf, rr(ls.inter));
      // inter = h W1 + b1
      linear_backward(be, rr(st.g_h), fg.intermediate.weight, fg.intermediate.bias, gf2, h, fw.intermediate.weight,
                      grad_write::accumulate);
    };
    ffn_back(W.query, G.query, ffn_in_q, 0, Lq * B);
    ffn_back(W.text, G.text, detail::row_range(ls.h1, Lq * B, rows), Lq * B, rows);
    // now g_h = d(h1) on text rows, d(ffn input) on query rows

    // ---- cross-attention on the query rows ----
    if (W.has_cross && Lq > 0) {
      auto dh2 = detail::row_range(st.g_h, 0, Lq * B);
      auto h1q = detail::row_range(ls.h1, 0, Lq * B);
      // h2 = layer_norm(sum2)
      layer_norm_backward(be, st.g_c, G.cross.norm.weight, G.cross.norm.bias, dh2, ls.sum2, W.cross.norm.weight,
                          layer_norm_cache<T>{ls.mean2, ls.rstd2});
      // sum2 = dropout(cctx Wd' + bd') + h1: the residual gives d(h1) its first term
      copy(be, dh2, st.g_c);  // g_h rows [0, Lq B) now hold d(h1) of the query rows
      tensor_view<T, 2> ddense = st.g_c;
      if (p_hidden > 0) {
        auto tmp = detail::row_range(st.g_tmp, 0, Lq * B);
        dropout_backward(be, tmp, st.g_c, p_hidden, detail::site_seed(in.seed, l, detail::cross_out));
        ddense = tmp;
      }
      // cctx Wd' + bd'
      linear_backward(be, st.g_cq, G.cross.dense.weight, G.cross.dense.bias, ddense, ls.cctx, W.cross.dense.weight);
      // cctx = attention(cq, ck, cv): image K/V gradients go to the image state (gathered: per pair)
      auto& img = *in.image;
      auto dck = gather ? st.g_ck : img.dk[li];
      auto dcv = gather ? st.g_cv : img.dv[li];
      // without a gather, dk/dv add straight into the image state; the mode covers dq too, so start it at 0
      if (!gather) std::fill(st.g_c.data(), st.g_c.data() + st.g_c.size(), T{});
      attention_backward(be, detail::by_batch(st.g_c, B), dck, dcv, detail::by_batch(st.g_cq, B),
                         detail::by_batch(ls.cq, B), ls.ck, ls.cv, attention_cache<T>{ls.cprobs}, NH,
                         bidirectional{}, no_padding, p_attn, detail::site_seed(in.seed, l, detail::cross_probs),
                         gather ? grad_write::assign : grad_write::accumulate);
      if (gather) {
        detail::scatter_add_images(be, img.dk[li], st.g_ck, in.image_index);
        detail::scatter_add_images(be, img.dv[li], st.g_cv, in.image_index);
      }
      // cq = h1 Wq' + bq'
      linear_backward(be, dh2, G.cross.query.weight, G.cross.query.bias, st.g_c, h1q, W.cross.query.weight,
                      grad_write::accumulate);
    }

    // ---- self-attention ----
    // h1 = layer_norm(sum1)
    layer_norm_backward(be, rows_of(st.g_sum), G.self.norm.weight, G.self.norm.bias, rows_of(st.g_h),
                        rows_of(ls.sum1), W.self.norm.weight, layer_norm_cache<T>{rows_of(ls.mean1), rows_of(ls.rstd1)});
    // sum1 = dropout(ctx Wd + bd) + x: the residual gives d(x) its first term (none beyond the rows computed)
    copy(be, rows_of(dnext), rows_of(st.g_sum));
    if (rows < Lp) detail::zero(detail::row_range(dnext, rows, Lp));
    tensor_view<T, 2> ddense = rows_of(st.g_sum);
    if (p_hidden > 0) {
      dropout_backward(be, rows_of(st.g_tmp), ddense, p_hidden, detail::site_seed(in.seed, l, detail::self_out));
      ddense = rows_of(st.g_tmp);
    }
    // ctx Wd + bd  (dcur is free again: it becomes d(ctx))
    linear_backward(be, rows_of(dcur), G.self.dense.weight, G.self.dense.bias, ddense, rows_of(ls.ctx),
                    W.self.dense.weight);
    // ctx = attention(q, k, v), in the padded layout
    auto dctx = rows_of(dcur);
    if (packed) {
      dctx = detail::row_range(st.p_ctx, 0, prow_q);
      detail::unpack_rows(be, dctx, detail::as_const(rows_of(dcur)), prow);
    }
    auto g_q = detail::row_range(st.g_q, 0, prow_q);
    detail::with_self_mask(st, [&](const auto& mask) {
      attention_backward(be, detail::by_batch(g_q, B), detail::by_batch(st.g_k, B),
                         detail::by_batch(st.g_v, B), detail::by_batch(dctx, B),
                         detail::by_batch(detail::row_range(ls.q, 0, prow_q), B), detail::by_batch(ls.k, B),
                         detail::by_batch(ls.v, B), attention_cache<T>{ls.probs}, NH, mask, st.key_padding, p_attn,
                         detail::site_seed(in.seed, l, detail::self_probs));
    });
    // the prefix keys/values were the prefix pass's: their gradient goes back there
    if (P > 0) {
      auto& pl = in.prefix->layers[li];
      axpy(be, pl.dk_extra, detail::row_range(st.g_k, 0, P * B));
      axpy(be, pl.dv_extra, detail::row_range(st.g_v, 0, P * B));
    }
    auto dk_own = detail::row_range(st.g_k, P * B, S * B);
    auto dv_own = detail::row_range(st.g_v, P * B, S * B);
    // this pass's query K/V may have served another pass as its prefix
    if (ls.dk_extra.data()) {
      axpy(be, detail::row_range(dk_own, 0, Lq * B), ls.dk_extra);
      axpy(be, detail::row_range(dv_own, 0, Lq * B), ls.dv_extra);
    }
    // q, k, v = x Wq + bq, x Wk + bk, x Wv + bv (their gradients packed first)
    tensor_view<T, 2> dq_rows = g_q, dk_rows = dk_own, dv_rows = dv_own;
    if (packed) {
      dq_rows = rows_of(st.g_pq), dk_rows = st.g_pk, dv_rows = st.g_pv;
      detail::pack_rows(be, dq_rows, detail::as_const(g_q), prow);
      detail::pack_rows(be, dk_rows, detail::as_const(dk_own), prow);
      detail::pack_rows(be, dv_rows, detail::as_const(dv_own), prow);
    }
    linear_backward(be, rows_of(dnext), G.self.query.weight, G.self.query.bias, dq_rows, rows_of(x),
                    W.self.query.weight, grad_write::accumulate);
    linear_backward(be, dnext, G.self.key.weight, G.self.key.bias, dk_rows, x, W.self.key.weight,
                    grad_write::accumulate);
    linear_backward(be, dnext, G.self.value.weight, G.self.value.bias, dv_rows, x, W.self.value.weight,
                    grad_write::accumulate);
    std::swap(dcur, dnext);  // d(x) is the previous layer's d(out)
  }

  // ---- embeddings ----
  // x0 = dropout(layer_norm(emb))
  tensor_view<T, 2> dx0 = dcur;
  if (p_hidden > 0) {
    dropout_backward(be, dnext, dcur, p_hidden, detail::site_seed(in.seed, -1, detail::embed_site));
    dx0 = dnext;
  }
  layer_norm_backward(be, st.g_sum, m.g.embed_norm.weight, m.g.embed_norm.bias, dx0, st.emb, m.w.embed_norm.weight,
                      layer_norm_cache<T>{st.emb_mean, st.emb_rstd});
  // Row r of the embeddings reads row pos[r] of a table (query_tokens for the query rows, the position
  // embeddings for the text rows): the table's gradient is an embedding backward over those indices,
  // one call each (rows of one position summed in row order).
  std::vector<index_t> pos(static_cast<std::size_t>(Lp));
  for (index_t p = 0; p < L; ++p)
    for (index_t r = st.pos_rows[static_cast<std::size_t>(p)]; r < st.pos_rows[static_cast<std::size_t>(p + 1)]; ++r)
      pos[static_cast<std::size_t>(r)] = p < Lq ? p : p - Lq;
  // emb query rows = query_tokens[q] for every b
  if (Lq > 0)
    embedding_backward(be, tensor_view<T, 2>(m.g.query_tokens.data(), {Lq, cfg.hidden_size}),
                       detail::as_const(detail::row_range(st.g_sum, 0, Lq * B)),
                       tensor_view<const index_t, 1>(pos.data(), {Lq * B}));
  if (Tn > 0) {
    // emb text rows = word_emb[ids] + pos_emb[t]
    const tensor_view<const index_t, 1> ids(st.ids.data(), {Lp - Lq * B});
    auto dtext = detail::as_const(detail::row_range(st.g_sum, Lq * B, Lp));  // (packed text rows, C)
    embedding_backward(be, m.g.word_embeddings, dtext, ids, cfg.pad_token_id ? *cfg.pad_token_id : index_t{-1});
    embedding_backward(be, m.g.position_embeddings, dtext,
                       tensor_view<const index_t, 1>(pos.data() + Lq * B, {Lp - Lq * B}));
  }
}

}  // namespace blip2
