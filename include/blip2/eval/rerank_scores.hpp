// blip2/eval/rerank_scores.hpp: the scores of BLIP-2's retrieval evaluation, computed in batches from a
// Q-Former, as LAVIS's compute_sim_matrix / compute_itm compute them (lavis/models/blip2_models/blip2.py).
//
// Dimensions: Ni images, Nt texts, T tokens, Q queries, C hidden, D projection, N image tokens, E image width,
//             b items in one batch.
//
//   text_features     ids (Nt, T), mask (Nt, T) -> normalize(text_projection(text pass at [CLS]))    (Nt, D)
//   image_features    image_embeds (B, N, E)    -> normalize(vision_projection(image pass queries))  (B, Q, D)
//   itc_scores        sim[i, j] = max over q of image_feats[i, q] . text_feat[j]                      (Ni, Nt)
//                     a cosine: compute_sim_matrix does NOT divide by the temperature
//   itm_match_scores  for each (image i, text j) of a list: the ITM class-1 logit averaged over the
//                     queries of the joint pass ([queries ; text], bidirectional, text padding), as
//                     compute_itm: itm_head(query rows)[:, :, 1].mean(1), a logit, not a probability
// LAVIS then gives each query's k best candidates by sim the score itm + sim (eval/retrieval.hpp's
// plan_rerank / rerank_recall order them).
//
// Batches run in evaluation mode (no dropout). Padding: a batch of texts is cut to its longest row (the
// columns where every mask is 0 are dropped); masked keys get -10000 before the softmax, so the result is
// that of the fully padded batch (LAVIS pads to 35) up to the order of float sums.
// ITM pairs are batched `batch` at a time; the images of a batch are encoded once (encode_image_kv) and
// each pair reads its image's cross-attention K/V through an index: give the pairs image-major (as
// rerank_plan::pairs are) and a batch holds one or two images.
#pragma once
#include <algorithm>
#include <span>
#include <utility>
#include <vector>

#include "blip2/core/host_tensor.hpp"
#include "blip2/models/qformer/heads.hpp"

namespace blip2 {

namespace detail {
// Columns [0, len) of rows [r0, r1) of (ids, mask) with len the longest row (last 1 of the mask + 1),
// copied into dense (r1 - r0, len) buffers. An empty mask means all ones.
inline index_t cut_text_batch(tensor_view<const index_t, 2> ids, tensor_view<const index_t, 2> mask,
                              std::span<const index_t> rows, std::vector<index_t>& bids, std::vector<index_t>& bmask) {
  const index_t T = ids.extent(1);
  index_t len = mask.data() ? 1 : T;
  if (mask.data())
    for (index_t r : rows)
      for (index_t t = T; t-- > 0;)
        if (mask(r, t) != 0) {
          len = std::max(len, t + 1);
          break;
        }
  const auto b = static_cast<index_t>(rows.size());
  bids.resize(static_cast<std::size_t>(b * len));
  bmask.resize(static_cast<std::size_t>(b * len));
  for (index_t x = 0; x < b; ++x)
    for (index_t t = 0; t < len; ++t) {
      bids[static_cast<std::size_t>(x * len + t)] = ids(rows[static_cast<std::size_t>(x)], t);
      bmask[static_cast<std::size_t>(x * len + t)] = mask.data() ? mask(rows[static_cast<std::size_t>(x)], t) : 1;
    }
  return len;
}
struct no_progress {
  void operator()(index_t) const {}
};
}  // namespace detail

// text_feat (Nt, D) of the texts (ids, mask: (Nt, T); mask may be empty), `batch` texts per pass.
template <backend Be, class T, class OnDone = detail::no_progress>
host_tensor<T, 2> text_features(Be& be, const qformer_model<T>& m, tensor_view<const index_t, 2> ids,
                                tensor_view<const index_t, 2> mask, index_t batch = 256, OnDone&& on_done = {}) {
  const index_t Nt = ids.extent(0), D = m.config().image_text_hidden_size;
  BLIP2_CHECK(m.config().with_text, value_error, "text_features: the model has no text side");
  BLIP2_CHECK(batch >= 1, value_error, "text_features: batch = ", batch, " must be >= 1");
  if (mask.data()) detail::check_shape("text_features", "attention_mask", mask, ids.extents());
  host_tensor<T, 2> out({Nt, D});  // (Nt, D)
  qformer_pass_state<T> pass;
  projection_state<T> proj;
  std::vector<index_t> rows, bids, bmask;
  for (index_t j0 = 0; j0 < Nt; j0 += batch) {
    const index_t b = std::min(batch, Nt - j0);
    rows.resize(static_cast<std::size_t>(b));
    for (index_t x = 0; x < b; ++x) rows[static_cast<std::size_t>(x)] = j0 + x;
    const index_t len = detail::cut_text_batch(ids, mask, rows, bids, bmask);
    qformer_pass_inputs<T> in;
    in.batch = b;
    in.input_ids = tensor_view<const index_t, 2>(bids.data(), {b, len});
    in.attention_mask = tensor_view<const index_t, 2>(bmask.data(), {b, len});
    in.output_positions = 1;  // the last layer computes [CLS] only
    in.skip_padding = true;   // and no padding row
    qformer_forward(be, m, pass, in);
    // position 0 ([CLS]) of every text: the first b rows of the sequence-major output, (b, C)
    projection_forward(be, proj, m.w.text_projection, detail::as_const(row_range(pass.output(), 0, b)));
    std::copy(proj.feats.data(), proj.feats.data() + b * D, out.data() + j0 * D);
    on_done(j0 + b);
  }
  return out;
}

// image_feats (B, Q, D) of image_embeds (B, N, E), written into out.
template <backend Be, class T>
void image_features(Be& be, const qformer_model<T>& m, tensor_view<const T, 3> image_embeds, tensor_view<T, 3> out) {
  const auto& cfg = m.config();
  const index_t B = image_embeds.extent(0), Q = cfg.num_query_tokens, C = cfg.qformer.hidden_size;
  const index_t D = cfg.image_text_hidden_size;
  BLIP2_CHECK(cfg.with_text, value_error, "image_features: the model has no retrieval heads (vision_projection)");
  detail::check_shape("image_features", "out", out, {B, Q, D});
  detail::check_contiguous("image_features", "out", out);
  image_kv_state<T> kv;
  encode_image_kv(be, m, kv, image_embeds);
  qformer_pass_state<T> pass;
  qformer_pass_inputs<T> in;
  in.batch = B;
  in.queries = true;
  in.image = &kv;
  qformer_forward(be, m, pass, in);
  host_tensor<T, 3> rows({B, Q, C});  // (B, Q, C): the query rows, batch-major
  copy(be, rows.view(), detail::as_const(by_batch(row_range(pass.output(), 0, Q * B), B)));
  projection_state<T> proj;
  projection_forward(be, proj, m.w.vision_projection, tensor_view<const T, 2>(rows.data(), {B * Q, C}));
  std::copy(proj.feats.data(), proj.feats.data() + B * Q * D, out.data());
}

// sim (Ni, Nt) = max over q of image_feats (Ni, Q, D) . text_feat (Nt, D), a block of images at a time
// (the (block Q, Nt) products stay under 2^24 floats).
template <backend Be, class T>
void itc_scores(Be& be, tensor_view<const T, 3> image_feats, tensor_view<const T, 2> text_feat, tensor_view<T, 2> sim) {
  const index_t Ni = image_feats.extent(0), Q = image_feats.extent(1), D = image_feats.extent(2);
  const index_t Nt = text_feat.extent(0);
  detail::check_shape("itc_scores", "text_feat", text_feat, {Nt, D});
  detail::check_shape("itc_scores", "sim", sim, {Ni, Nt});
  detail::check_contiguous("itc_scores", "image_feats", image_feats);
  const index_t block = std::max<index_t>(1, (index_t{1} << 24) / std::max<index_t>(1, Q * Nt));
  std::vector<T> prod;
  for (index_t i0 = 0; i0 < Ni; i0 += block) {
    const index_t bi = std::min(block, Ni - i0);
    prod.resize(static_cast<std::size_t>(bi * Q * Nt));
    const tensor_view<T, 2> p(prod.data(), {bi * Q, Nt});  // (bi Q, Nt)
    matmul(be, p, tensor_view<const T, 2>(image_feats.data() + i0 * Q * D, {bi * Q, D}), transpose(text_feat));
    for (index_t i = 0; i < bi; ++i)
      for (index_t j = 0; j < Nt; ++j) {
        T best = p(i * Q, j);
        for (index_t q = 1; q < Q; ++q) best = std::max(best, p(i * Q + q, j));
        sim(i0 + i, j) = best;
      }
  }
}

// The ITM class-1 logit (mean over the queries) of each pair (image, text) of `pairs`.
// image_of(i) returns image i's embeddings as a tensor_view<const T, 2> (N, E) (every image the same N);
// ids, mask (Nt, T) are the texts (mask may be empty). on_done(pairs done) is called after each batch.
template <backend Be, class T, class ImageOf, class OnDone = detail::no_progress>
std::vector<T> itm_match_scores(Be& be, const qformer_model<T>& m, std::span<const std::pair<index_t, index_t>> pairs,
                                ImageOf&& image_of, tensor_view<const index_t, 2> ids,
                                tensor_view<const index_t, 2> mask, index_t batch = 32, OnDone&& on_done = {}) {
  const auto& cfg = m.config();
  BLIP2_CHECK(cfg.with_text, value_error, "itm_match_scores: the model has no text side (no ITM head)");
  BLIP2_CHECK(batch >= 1, value_error, "itm_match_scores: batch = ", batch, " must be >= 1");
  if (mask.data()) detail::check_shape("itm_match_scores", "attention_mask", mask, ids.extents());
  const index_t P = static_cast<index_t>(pairs.size()), Q = cfg.num_query_tokens;
  std::vector<T> scores(static_cast<std::size_t>(P));
  if (P == 0) return scores;
  const tensor_view<const T, 2> first = image_of(pairs[0].first);
  const index_t N = first.extent(0), E = first.extent(1);
  std::vector<T> images;                       // (nb, N, E): the distinct images of a batch
  std::vector<index_t> which, image_index, rows, bids, bmask;
  image_kv_state<T> kv;
  qformer_pass_state<T> joint;
  itm_head_state<T> itm;
  for (index_t p0 = 0; p0 < P; p0 += batch) {
    const index_t b = std::min(batch, P - p0);
    which.clear();
    image_index.clear();
    rows.clear();
    for (index_t x = 0; x < b; ++x) {
      const auto [i, j] = pairs[static_cast<std::size_t>(p0 + x)];
      BLIP2_CHECK(j >= 0 && j < ids.extent(0), value_error, "itm_match_scores: pair ", p0 + x, " names text ", j,
                  " outside [0, ", ids.extent(0), ")");
      auto it = std::find(which.begin(), which.end(), i);
      if (it == which.end()) it = which.insert(which.end(), i);
      image_index.push_back(static_cast<index_t>(it - which.begin()));
      rows.push_back(j);
    }
    const auto nb = static_cast<index_t>(which.size());
    images.resize(static_cast<std::size_t>(nb * N * E));
    for (index_t x = 0; x < nb; ++x) {
      const tensor_view<const T, 2> img = image_of(which[static_cast<std::size_t>(x)]);
      detail::check_shape("itm_match_scores", "image_of(i)", img, {N, E});
      copy(be, tensor_view<T, 2>(images.data() + x * N * E, {N, E}), img);
    }
    const index_t len = detail::cut_text_batch(ids, mask, rows, bids, bmask);
    encode_image_kv(be, m, kv, tensor_view<const T, 3>(images.data(), {nb, N, E}));
    qformer_pass_inputs<T> in;  // [queries ; text], bidirectional, text padding, pair x reads image image_index[x]
    in.batch = b;
    in.queries = true;
    in.image = &kv;
    in.image_index = image_index;
    in.input_ids = tensor_view<const index_t, 2>(bids.data(), {b, len});
    in.attention_mask = tensor_view<const index_t, 2>(bmask.data(), {b, len});
    in.attention = qformer_attention::bidirectional;
    in.output_positions = Q;  // the ITM head reads the query rows only
    in.skip_padding = true;
    qformer_forward(be, m, joint, in);
    itm_head_forward(be, itm, m.w.itm_head, detail::as_const(row_range(joint.output(), 0, Q * b)), b);
    for (index_t x = 0; x < b; ++x) scores[static_cast<std::size_t>(p0 + x)] = itm.logits(x, 1);
    on_done(p0 + b);
  }
  return scores;
}

}  // namespace blip2
