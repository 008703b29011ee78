// blip2/models/qformer/heads.hpp: what BLIP-2 computes on top of the Q-Former's outputs.
//
// Dimensions: B batch, Bi images, Bt texts, Q queries, C hidden, D projection (image_text_hidden_size).
//   projected features  feats = normalize(X W^T + b)           image: X = query outputs (B Q, C) -> (B Q, D)
//                                                              text:  X = text output at [CLS] (B, C) -> (B, D)
//   ITC similarity      sim[i, j] = max_q image_feats[i, q] . text_feat[j]        (Bi, Bt), argmax kept
//   ITM logits          logits[b] = mean over q of itm_head(query_output[b, q])   (B, 2)
// Each has a state with what its backward needs; backward adds into the model's gradients and assigns
// (or, with grad_write::accumulate, adds) the input gradient. States live in the backend's memory space
// (Space, deduced from the state); the view arguments convert as the state's element type says.
#pragma once
#include <type_traits>
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/l2_normalize.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/matmul.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/nn/row_max.hpp"

namespace blip2 {

// ---- projected, L2-normalised features: the ITC embeddings ----
template <class T, memory_space Space = host_space>
struct projection_state {
  tensor_view<const T, 2, Space> x;   // (R, C) the input rows (kept for backward)
  tensor_view<T, 2, Space> proj;      // (R, D)
  tensor_view<T, 2, Space> feats;     // (R, D)
  tensor_view<T, 1, Space> norm;      // (R)
  tensor_view<T, 2, Space> dproj;     // (R, D) backward scratch
  buffer<T, Space> storage;
};

template <backend Be, class T, memory_space S>
void projection_forward(Be& be, projection_state<T, S>& st, const linear_weights<T, S>& w,
                        std::type_identity_t<tensor_view<const T, 2, S>> x) {
  const index_t R = x.extent(0), D = w.weight.extent(0);
  st.x = x;
  lay_out(st.storage, [&](auto& a) {
    st.proj = a.template take<2>({R, D});
    st.feats = a.template take<2>({R, D});
    st.norm = a.template take<1>({R});
    st.dproj = a.template take<2>({R, D});
  });
  linear_forward(be, st.proj, x, w.weight, w.bias);                                     // (R, D)
  l2_normalize_forward(be, st.feats, st.proj, l2_normalize_cache<T, S>{st.norm});       // (R, D)
}

template <backend Be, class T, memory_space S>
void projection_backward(Be& be, projection_state<T, S>& st, const linear_weights<T, S>& w, linear_weights<T, S>& g,
                         std::type_identity_t<tensor_view<const T, 2, S>> dfeats,
                         std::type_identity_t<tensor_view<T, 2, S>> dx, grad_write mode = grad_write::assign) {
  // feats = normalize(proj)
  l2_normalize_backward(be, st.dproj, dfeats, st.proj, l2_normalize_cache<T, S>{st.norm});
  // proj = x W^T + b
  linear_backward(be, dx, g.weight, g.bias, st.dproj, st.x, w.weight, mode);
}

// ---- ITC similarity: sim[i, j] = max over q of image_feats[i, q] . text_feat[j] ----
template <class T, memory_space Space = host_space>
struct itc_similarity_state {
  tensor_view<const T, 3, Space> image_feats;  // (Bi, Q, D)
  tensor_view<const T, 2, Space> text_feat;    // (Bt, D)
  tensor_view<T, 3, Space> all;                // (Bi, Q, Bt): every query's similarity
  tensor_view<T, 3, Space> by_pair;            // (Bi, Bt, Q): the same, pair-major for the row max
  tensor_view<T, 2, Space> sim;                // (Bi, Bt)
  tensor_view<index_t, 2, Space> argmax;       // (Bi, Bt): the query that gave the max
  tensor_view<T, 3, Space> dall, dby_pair;     // backward scratch
  buffer<T, Space> storage;
  buffer<index_t, Space> argmax_storage;
};

template <backend Be, class T, memory_space S>
void itc_similarity_forward(Be& be, itc_similarity_state<T, S>& st, std::type_identity_t<tensor_view<const T, 3, S>> image_feats,
                            std::type_identity_t<tensor_view<const T, 2, S>> text_feat) {
  const index_t Bi = image_feats.extent(0), Q = image_feats.extent(1), D = image_feats.extent(2);
  const index_t Bt = text_feat.extent(0);
  detail::check_shape("itc_similarity_forward", "text_feat", text_feat, {Bt, D});
  st.image_feats = image_feats;
  st.text_feat = text_feat;
  lay_out(st.storage, [&](auto& a) {
    st.all = a.template take<3>({Bi, Q, Bt});
    st.by_pair = a.template take<3>({Bi, Bt, Q});
    st.sim = a.template take<2>({Bi, Bt});
    st.dall = a.template take<3>({Bi, Q, Bt});
    st.dby_pair = a.template take<3>({Bi, Bt, Q});
  });
  st.argmax_storage.reserve_elements(static_cast<std::size_t>(Bi * Bt));
  st.argmax = {st.argmax_storage.data(), {Bi, Bt}};
  // all = image_feats (Bi Q, D) @ text_feat^T (D, Bt)
  const tensor_view<const T, 2, S> img_rows(image_feats.data(), {Bi * Q, D}, {image_feats.stride(1), image_feats.stride(2)});
  matmul(be, tensor_view<T, 2, S>(st.all.data(), {Bi * Q, Bt}), img_rows, transpose(text_feat));
  copy(be, st.by_pair, transpose(st.all, 1, 2));                               // (Bi, Bt, Q)
  row_max_forward(be, tensor_view<T, 1, S>(st.sim.data(), {Bi * Bt}), tensor_view<index_t, 1, S>(st.argmax.data(), {Bi * Bt}),
                  tensor_view<const T, 2, S>(st.by_pair.data(), {Bi * Bt, Q}));
}

// dimage_feats (Bi, Q, D) and dtext_feat (Bt, D) are ADDED to (both may already hold other terms).
template <backend Be, class T, memory_space S>
void itc_similarity_backward(Be& be, itc_similarity_state<T, S>& st, std::type_identity_t<tensor_view<const T, 2, S>> dsim,
                             std::type_identity_t<tensor_view<T, 3, S>> dimage_feats,
                             std::type_identity_t<tensor_view<T, 2, S>> dtext_feat) {
  const index_t Bi = st.all.extent(0), Q = st.all.extent(1), Bt = st.all.extent(2), D = st.text_feat.extent(1);
  detail::check_shape("itc_similarity_backward", "dsim", dsim, {Bi, Bt});
  // sim = row max of by_pair
  row_max_backward(be, tensor_view<T, 2, S>(st.dby_pair.data(), {Bi * Bt, Q}),
                   tensor_view<const T, 1, S>(dsim.data(), {Bi * Bt}, {dsim.stride(1)}),
                   tensor_view<const index_t, 1, S>(st.argmax.data(), {Bi * Bt}));
  // by_pair = all with the last two axes exchanged
  copy(be, transpose(st.dall, 1, 2), st.dby_pair);
  // all = image_feats @ text_feat^T
  const tensor_view<T, 2, S> dall(st.dall.data(), {Bi * Q, Bt});
  const tensor_view<T, 2, S> dimg_rows(dimage_feats.data(), {Bi * Q, D}, {dimage_feats.stride(1), dimage_feats.stride(2)});
  const tensor_view<const T, 2, S> img_rows(st.image_feats.data(), {Bi * Q, D}, {st.image_feats.stride(1), st.image_feats.stride(2)});
  matmul(be, dimg_rows, detail::as_const(dall), st.text_feat, 1.0, 1.0);              // += dall @ text
  matmul(be, dtext_feat, transpose(detail::as_const(dall)), img_rows, 1.0, 1.0);       // += dall^T @ img
}

// ---- ITM logits: mean over the queries of itm_head(query outputs) ----
template <class T, memory_space Space = host_space>
struct itm_head_state {
  tensor_view<const T, 2, Space> query_rows;  // (Q B, C) sequence-major query outputs of a joint pass
  tensor_view<T, 2, Space> per_query;         // (Q B, 2)
  tensor_view<T, 2, Space> logits;            // (B, 2)
  tensor_view<T, 2, Space> ones;              // (1, Q)
  tensor_view<T, 2, Space> dper_query;        // (Q B, 2)
  buffer<T, Space> storage;
};

template <backend Be, class T, memory_space S>
void itm_head_forward(Be& be, itm_head_state<T, S>& st, const linear_weights<T, S>& head,
                      std::type_identity_t<tensor_view<const T, 2, S>> query_rows, index_t B) {
  const index_t Q = query_rows.extent(0) / B;
  st.query_rows = query_rows;
  lay_out(st.storage, [&](auto& a) {
    st.per_query = a.template take<2>({Q * B, 2});
    st.logits = a.template take<2>({B, 2});
    st.ones = a.template take<2>({1, Q});
    st.dper_query = a.template take<2>({Q * B, 2});
  });
  fill(be, st.ones, T(1));
  linear_forward(be, st.per_query, query_rows, head.weight, head.bias);  // (Q B, 2)
  // logits (1, B 2) = (1/Q) ones (1, Q) @ per_query (Q, B 2)
  matmul(be, tensor_view<T, 2, S>(st.logits.data(), {1, B * 2}), detail::as_const(st.ones),
         tensor_view<const T, 2, S>(st.per_query.data(), {Q, B * 2}), 1.0 / static_cast<double>(Q));
}

template <backend Be, class T, memory_space S>
void itm_head_backward(Be& be, itm_head_state<T, S>& st, const linear_weights<T, S>& head, linear_weights<T, S>& ghead,
                       std::type_identity_t<tensor_view<const T, 2, S>> dlogits,
                       std::type_identity_t<tensor_view<T, 2, S>> dquery_rows, grad_write mode = grad_write::assign) {
  const index_t B = st.logits.extent(0), Q = st.ones.extent(1);
  detail::check_shape("itm_head_backward", "dlogits", dlogits, {B, 2});
  // logits = (1/Q) ones @ per_query  ->  dper_query (Q, B 2) = (1/Q) ones^T @ dlogits (1, B 2)
  matmul(be, tensor_view<T, 2, S>(st.dper_query.data(), {Q, B * 2}), transpose(detail::as_const(st.ones)),
         tensor_view<const T, 2, S>(dlogits.data(), {1, B * 2}), 1.0 / static_cast<double>(Q));
  // per_query = query_rows head^T + b
  linear_backward(be, dquery_rows, ghead.weight, ghead.bias, st.dper_query, st.query_rows, head.weight, mode);
}

}  // namespace blip2
