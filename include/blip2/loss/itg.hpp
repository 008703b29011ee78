// blip2/loss/itg.hpp: BLIP-2's image-grounded text generation loss (ITG): BERT's LM head on the text rows
// of the cached-K/V pass, shifted by one, cross-entropy with label smoothing; forward and backward.
// (LAVIS Blip2Qformer.forward, "Image Captioning", and BertLMHeadModel.forward in Qformer.py.)
//
// Dimensions: B batch, T text positions (T >= 2), C hidden, V vocabulary, R = (T - 1) B predicting rows.
//   inputs:   itg_decoder_inputs(): decoder ids = input_ids with position 0 replaced by [DEC]
//             (qformer_config::dec_token_id()); labels = decoder ids with pad tokens (== pad_token_id) set to
//             ignore_index (-100). The decoder ids feed the cached-K/V pass (models/qformer/pass.hpp).
//   rows:     text_rows (T B, C) are that pass's output, SEQUENCE-MAJOR: row t B + b is position t of batch
//             element b. Positions 0 .. T-2 are the first R rows, one dense block, and row t B + b predicts
//             labels(b, t + 1): the shift needs no copy. Position T-1 predicts nothing.
//   forward:  h1 = x W_t^T + b_t                      (R, C)  cls.predictions.transform.dense
//             h2 = gelu(h1)                           (R, C)  exact erf GELU (hidden_act "gelu")
//             h3 = LayerNorm(h2; eps)                 (R, C)  cls.predictions.transform.LayerNorm
//             logits = h3 E^T + bias                  (R, V)  decoder tied to the word embeddings E (V, C)
//             loss = CE(logits, labels shifted, label_smoothing = 0.1, ignore_index), mean over counted rows
//                    (0 when every label is ignored; PyTorch gives NaN there)
//   backward: dtext_rows (T B, C): rows of positions 0 .. T-2 assigned (or added with
//             grad_write::accumulate), the last B rows zeroed (assign) or left alone (accumulate);
//             dhead (transform, LayerNorm, bias) += and dword_embeddings += (the tied decoder; add it to the
//             model's word-embedding gradient, which the embedding lookup also adds to).
// The cache keeps a view of text_rows: keep it alive until backward. logits and dlogits are (R, V) each
// (R = 31 B, V = 30523 for BLIP-2: about 3.8 MB per batch element in float, twice).
#pragma once
#include <optional>
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/loss/cross_entropy.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/models/qformer/weights.hpp"

namespace blip2 {

template <class T>
struct itg_cache {
  index_t B = 0, T_text = 0, C = 0, V = 0;
  double label_smoothing = 0.1;
  index_t ignore_index = default_ignore_index;
  tensor_view<const T, 2> x;        // (R, C) the predicting text rows (a view of the caller's text_rows)
  tensor_view<index_t, 1> targets;  // (R) targets(t B + b) = labels(b, t + 1)
  tensor_view<T, 2> h1, h2, h3;     // (R, C) dense, GELU, LayerNorm
  tensor_view<T, 1> mean, rstd;     // (R)
  tensor_view<T, 2> logits;         // (R, V)
  tensor_view<T, 1> row_loss, lse;  // (R)
  tensor_view<index_t, 1> count;    // (1) labels that count
  tensor_view<T, 2> dlogits;        // (R, V) backward scratch
  tensor_view<T, 2> dh3, dh2, dh1;  // (R, C) backward scratch
  std::vector<T> storage;
  std::vector<index_t> index_storage;
};

// decoder_ids (B, T) = input_ids with [:, 0] = dec_token_id; labels (B, T) = decoder_ids with every
// pad_token_id set to ignore_index (no padding id: nothing ignored). LAVIS: decoder_input_ids[:, 0] =
// bos_token_id; labels = decoder_input_ids.masked_fill(decoder_input_ids == pad_token_id, -100).
template <class Ids, class DecIds, class Labels>
void itg_decoder_inputs(Ids&& input_ids, index_t dec_token_id, std::optional<index_t> pad_token_id, DecIds&& decoder_ids,
                        Labels&& labels, index_t ignore_index = default_ignore_index) {
  constexpr std::string_view op = "itg_decoder_inputs";
  auto in = detail::as_const(view(input_ids));  // (B, T)
  auto dec = view(decoder_ids);                 // (B, T)
  auto lab = view(labels);                      // (B, T)
  static_assert(decltype(in)::rank == 2 && decltype(dec)::rank == 2 && decltype(lab)::rank == 2,
                "itg_decoder_inputs: input_ids, decoder_ids and labels are (B, T)");
  static_assert(std::is_same_v<typename decltype(in)::value_type, index_t> &&
                    std::is_same_v<typename decltype(dec)::element_type, index_t> &&
                    std::is_same_v<typename decltype(lab)::element_type, index_t>,
                "itg_decoder_inputs: ids are int64 (blip2::index_t); decoder_ids and labels are written");
  const index_t B = in.extent(0), Tn = in.extent(1);
  detail::check_shape(op, "decoder_ids", dec, {B, Tn});
  detail::check_shape(op, "labels", lab, {B, Tn});
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t) {
      const index_t id = t == 0 ? dec_token_id : in(b, t);
      dec(b, t) = id;
      lab(b, t) = pad_token_id && id == *pad_token_id ? ignore_index : id;
    }
}

// loss (1) = the ITG loss of the text rows (T B, C) under labels (B, T); fills cache.
template <backend Be, class T, class Loss, class E, class Rows, class Labels>
void itg_forward(Be& be, Loss&& loss, itg_cache<T>& cache, const lm_head_weights<T>& head, E&& word_embeddings,
                 Rows&& text_rows, Labels&& labels, double layer_norm_eps, double label_smoothing = 0.1,
                 index_t ignore_index = default_ignore_index) {
  constexpr std::string_view op = "itg_forward";
  static_assert(Be::memory_space::host_accessible, "itg_forward: the shifted labels are written on the host");
  auto emb = detail::as_const(detail::arg_view<Be, 2>(word_embeddings));  // (V, C)
  auto rows = detail::as_const(detail::arg_view<Be, 2>(text_rows));       // (T B, C)
  auto lab = detail::as_const(detail::arg_view<Be, 2>(labels));           // (B, T)
  static_assert(std::is_same_v<typename decltype(emb)::value_type, T> &&
                    std::is_same_v<typename decltype(rows)::value_type, T>,
                "itg_forward: word_embeddings, text_rows and the head must have the same element type");
  static_assert(std::is_same_v<typename decltype(lab)::value_type, index_t>, "itg_forward: labels are int64 (blip2::index_t)");
  const index_t B = lab.extent(0), Tn = lab.extent(1), V = emb.extent(0), C = emb.extent(1);
  BLIP2_CHECK(B >= 1 && Tn >= 2, shape_error, op, ": labels have shape ", shape_string(lab),
              "; ITG needs B >= 1 and T >= 2 (position t predicts token t + 1)");
  detail::check_shape(op, "text_rows", rows, {Tn * B, C});
  detail::check_shape(op, "head.transform.weight", head.transform.weight, {C, C});
  detail::check_shape(op, "head.bias", head.bias, {V});
  const index_t R = (Tn - 1) * B;
  // each label (b, t >= 1) is a vocabulary id or ignore_index (label (b, 0) is never predicted)
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 1; t < Tn; ++t)
      BLIP2_CHECK(lab(b, t) == ignore_index || (lab(b, t) >= 0 && lab(b, t) < V), value_error, op, ": labels(", b, ", ",
                  t, ") = ", lab(b, t), " is outside [0, V) with V = ", V, " and is not ignore_index (", ignore_index, ")");

  cache.B = B, cache.T_text = Tn, cache.C = C, cache.V = V;
  cache.label_smoothing = label_smoothing, cache.ignore_index = ignore_index;
  cache.x = tensor_view<const T, 2>(rows.data(), {R, C}, rows.strides());  // positions 0 .. T-2
  lay_out(cache.storage, [&](auto& a) {
    cache.h1 = a.template take<2>({R, C});
    cache.h2 = a.template take<2>({R, C});
    cache.h3 = a.template take<2>({R, C});
    cache.mean = a.template take<1>({R});
    cache.rstd = a.template take<1>({R});
    cache.logits = a.template take<2>({R, V});
    cache.row_loss = a.template take<1>({R});
    cache.lse = a.template take<1>({R});
    cache.dlogits = a.template take<2>({R, V});
    cache.dh3 = a.template take<2>({R, C});
    cache.dh2 = a.template take<2>({R, C});
    cache.dh1 = a.template take<2>({R, C});
  });
  lay_out(cache.index_storage, [&](auto& a) {
    cache.targets = a.template take<1>({R});
    cache.count = a.template take<1>({1});
  });
  // shift by one: row t B + b predicts labels(b, t + 1)
  for (index_t t = 0; t + 1 < Tn; ++t)
    for (index_t b = 0; b < B; ++b) cache.targets(t * B + b) = lab(b, t + 1);

  linear_forward(be, cache.h1, cache.x, head.transform.weight, head.transform.bias);                     // (R, C)
  gelu_forward(be, cache.h2, detail::as_const(cache.h1));                                               // (R, C)
  layer_norm_forward(be, cache.h3, layer_norm_cache<T>{cache.mean, cache.rstd}, detail::as_const(cache.h2),
                     head.norm.weight, head.norm.bias, layer_norm_eps);                                  // (R, C)
  linear_forward(be, cache.logits, detail::as_const(cache.h3), emb, head.bias);                          // (R, V)
  cross_entropy_forward(be, loss, cache.row_loss, cross_entropy_cache<T>{cache.lse, cache.count},
                        detail::as_const(cache.logits), detail::as_const(cache.targets), label_smoothing, ignore_index);
}

// dtext_rows (T B, C): assigned, or added with grad_write::accumulate (the last B rows get nothing);
// dhead += and dword_embeddings += (parameter gradients).
template <backend Be, class T, class DRows, class DE, class DLoss, class E>
void itg_backward(Be& be, DRows&& dtext_rows, lm_head_weights<T>& dhead, DE&& dword_embeddings, DLoss&& dloss,
                  itg_cache<T>& cache, const lm_head_weights<T>& head, E&& word_embeddings,
                  grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "itg_backward";
  auto drows = detail::arg_view<Be, 2>(dtext_rows);                        // (T B, C)
  auto demb = detail::arg_view<Be, 2>(dword_embeddings);                   // (V, C)
  auto emb = detail::as_const(detail::arg_view<Be, 2>(word_embeddings));  // (V, C)
  BLIP2_CHECK(cache.logits.data() != nullptr, value_error, op, ": the cache is empty; call itg_forward first");
  const index_t B = cache.B, Tn = cache.T_text, C = cache.C, V = cache.V, R = (Tn - 1) * B;
  detail::check_shape(op, "dtext_rows", drows, {Tn * B, C});
  detail::check_shape(op, "dword_embeddings", demb, {V, C});
  detail::check_shape(op, "word_embeddings", emb, {V, C});
  const tensor_view<T, 2> dx(drows.data(), {R, C}, drows.strides());                     // positions 0 .. T-2
  const tensor_view<T, 2> dlast(drows.data() + R * drows.stride(0), {B, C}, drows.strides());  // position T-1

  // loss = CE(logits, targets)
  cross_entropy_backward(be, cache.dlogits, dloss, detail::as_const(cache.logits), detail::as_const(cache.targets),
                         cross_entropy_cache<T>{cache.lse, cache.count}, cache.label_smoothing, cache.ignore_index);
  // logits = h3 E^T + bias  (E and bias +=)
  linear_backward(be, cache.dh3, demb, dhead.bias, detail::as_const(cache.dlogits), detail::as_const(cache.h3), emb);
  // h3 = LayerNorm(h2)
  layer_norm_backward(be, cache.dh2, dhead.norm.weight, dhead.norm.bias, detail::as_const(cache.dh3),
                      detail::as_const(cache.h2), head.norm.weight, layer_norm_cache<T>{cache.mean, cache.rstd});
  // h2 = gelu(h1)
  gelu_backward(be, cache.dh1, detail::as_const(cache.dh2), detail::as_const(cache.h1));
  // h1 = x W_t^T + b_t
  linear_backward(be, dx, dhead.transform.weight, dhead.transform.bias, detail::as_const(cache.dh1), cache.x,
                  head.transform.weight, mode);
  // position T-1 predicts nothing: its rows get no gradient
  if (mode == grad_write::assign)
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c) dlast(b, c) = T(0);
}

}  // namespace blip2
