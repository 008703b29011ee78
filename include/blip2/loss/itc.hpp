// blip2/loss/itc.hpp: BLIP-2's image-text contrastive loss (ITC), forward and backward, as LAVIS's
// Blip2Qformer.forward computes it ("Image-text Contrastive").
//
// Dimensions: B local pairs (image b goes with text b), Q queries, D projection dim (embed_dim, 256),
//             Bo pairs of other ranks (extra negatives, no gradient), Ba = B + Bo columns.
//
// Columns. The Ba images and texts are in the order of LAVIS's concat_all_gather: the local block starts at
// column off = local_offset (rank * B in LAVIS) and the extras fill the rest in their order:
//     image_all = [extra_img[0, off) ; image_feats ; extra_img[off, Bo)]       (Ba, Q, D)
//     text_all  = [extra_txt[0, off) ; text_feat   ; extra_txt[off, Bo)]       (Ba, D)
// Without extras, Ba = B and off = 0: one rank.
//
//   forward:  sim_i2t[b, j] = max_q image_feats[b, q] . text_all[j]   / temp          (B, Ba)
//             sim_t2i[b, i] = max_q text_feat[b]     . image_all[i, q] / temp         (B, Ba)
//             temp is the learnable scalar (a rank-0 tensor); no clamp (Blip2Qformer has none).
//             without image ids (LAVIS's default branch):
//               loss = (CE(sim_i2t, off + b, eps) + CE(sim_t2i, off + b, eps)) / 2    eps = label_smoothing
//               (CE = cross_entropy with label smoothing, mean over the B rows)
//             with image ids (LAVIS's "coco retrieval finetuning" branch), one id per column:
//               pos[b, j] = (ids[off + b] == ids[j])
//               q[b, j]   = (1 - eps) pos[b, j] / sum_j' pos[b, j'] + eps / Ba
//               loss = (mean_b -sum_j q[b, j] log_softmax(sim_i2t)[b, j]
//                       + mean_b -sum_j q[b, j] log_softmax(sim_t2i)[b, j]) / 2
//             When every id differs, both branches give the same loss.
//   backward: dimage_feats (B, Q, D) and dtext_feat (B, D): assigned, or added with grad_write::accumulate
//             (the projections' gradients also get the other objectives' terms);
//             dtemp += (a parameter gradient); the extras get no gradient (LAVIS gathers them without);
//             with detach_gathered_side, image_feats only through sim_i2t and text_feat only through sim_t2i.
//
// Gradient flow. LAVIS gathers image_feats_all / text_feat_all with concat_all_gather, which has no
// gradient, for the local block too, whenever torch.distributed is initialised (and Blip2Qformer.forward
// calls dist.get_rank(), so in LAVIS's training it always is). There, image_feats get gradient only through
// sim_i2t (their own rows) and text_feat only through sim_t2i: set itc_options::detach_gathered_side to
// reproduce that. The default (false) is the gradient of the loss as written, both sides, which is what
// one process without all_gather computes (concat_all_gather returns its input unchanged there).
//
// cache.sim_i2t and cache.sim_t2i (the logits above, already divided by temp) are what ITM's
// hard-negative samplers read (mining/negative_sampler.hpp), as LAVIS's sampling reuses sim_i2t / sim_t2i.
// The cache keeps views of image_feats, text_feat and the extras: keep them alive until backward.
// Without image ids the heavy parts and the cross-entropy run on the backend's ops; the soft-target
// cross-entropy of the image-id branch is a (B, Ba) loop here (host memory).
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/loss/cross_entropy.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/models/qformer/heads.hpp"

namespace blip2 {

// Other ranks' features: they join the softmax as extra columns and get no gradient.
template <class T>
struct itc_extra_negatives {
  tensor_view<const T, 3> image_feats;  // (Bo, Q, D), or empty: no extras
  tensor_view<const T, 2> text_feat;    // (Bo, D)
  index_t local_offset = 0;             // column of local pair 0, in [0, Bo] (rank * B)
};

template <class T>
struct itc_options {
  itc_extra_negatives<T> extra{};
  tensor_view<const index_t, 1> image_ids{};  // (Ba) image id of every column in column order, or empty
  double label_smoothing = 0.1;               // LAVIS: 0.1 (and 0.9 / 0.1 in the image-id branch)
  // LAVIS's gradient under torch.distributed: see "Gradient flow" in the header comment.
  bool detach_gathered_side = false;
};

template <class T>
struct itc_cache {
  index_t B = 0, Ba = 0, Q = 0, D = 0, offset = 0;
  bool extras = false;                   // other ranks' columns present
  bool soft = false;                     // image ids given: soft targets
  bool detach_gathered_side = false;
  double label_smoothing = 0.1;
  T temp = T(1);                         // the temperature of the forward pass
  tensor_view<const T, 3> image_feats;   // (B, Q, D) the inputs, kept for backward
  tensor_view<const T, 2> text_feat;     // (B, D)
  // outputs of forward
  tensor_view<T, 2> sim_i2t, sim_t2i;    // (B, Ba) logits = similarity / temp (the samplers read these)
  tensor_view<T, 1> loss_i2t, loss_t2i;  // (1) each direction's loss, for logging
  // hard labels
  tensor_view<index_t, 1> targets;       // (B) off + b
  tensor_view<T, 1> row_loss_i2t, row_loss_t2i, lse_i2t, lse_t2i;  // (B)
  tensor_view<index_t, 1> count_i2t, count_t2i;                    // (1)
  // soft targets (image ids)
  tensor_view<T, 2> soft_targets;        // (B, Ba) q
  // the columns with extras
  tensor_view<T, 3> image_all;           // (Ba, Q, D)
  tensor_view<T, 2> text_all;            // (Ba, D)
  itc_similarity_state<T> i2t;           // local images x all texts: (B, Ba)
  itc_similarity_state<T> t2i;           // all images x local texts: (Ba, B), only with extras
  // backward scratch
  tensor_view<T, 2> dsim_i2t, dsim_t2i;  // (B, Ba) gradients of the logits
  tensor_view<T, 2> dsim;                // (B, Ba) gradient of i2t's similarity (before / temp)
  tensor_view<T, 2> dsim_t;              // (Ba, B) gradient of t2i's similarity
  tensor_view<T, 3> dimage_i2t;          // (B, Q, D) image gradient through sim_i2t
  tensor_view<T, 3> dimage_all;          // (Ba, Q, D) image gradient through sim_t2i
  tensor_view<T, 2> dtext_all;           // (Ba, D)
  tensor_view<T, 1> dhalf;               // (1) dloss / 2
  std::vector<T> storage;
  std::vector<index_t> index_storage;
};

namespace detail {

template <class T, std::size_t R>
void zero_dense(const tensor_view<T, R>& v) {  // a dense cache buffer
  std::fill(v.data(), v.data() + v.size(), T(0));
}

// rows [r0, r1) along the first dimension
template <class T, std::size_t R>
tensor_view<T, R> first_dim_range(const tensor_view<T, R>& v, index_t r0, index_t r1) {
  auto e = v.extents();
  e[0] = r1 - r0;
  return {v.data() + r0 * v.stride(0), e, v.strides()};
}

// Soft-target cross-entropy, mean over rows: loss = mean_r sum_c q[r, c] (lse[r] - z[r, c]).
template <class T>
void soft_cross_entropy_forward(tensor_view<T, 1> loss, tensor_view<T, 1> row_loss, tensor_view<T, 1> lse,
                                tensor_view<const T, 2> z, tensor_view<const T, 2> q) {
  const index_t R = z.extent(0), V = z.extent(1);
  double total = 0;
  for (index_t r = 0; r < R; ++r) {
    T m = z(r, 0);
    for (index_t c = 1; c < V; ++c) m = std::max(m, z(r, c));
    double s = 0;
    for (index_t c = 0; c < V; ++c) s += std::exp(static_cast<double>(z(r, c) - m));
    const double l = static_cast<double>(m) + std::log(s);
    double row = 0;
    for (index_t c = 0; c < V; ++c) row += static_cast<double>(q(r, c)) * (l - static_cast<double>(z(r, c)));
    lse(r) = static_cast<T>(l);
    row_loss(r) = static_cast<T>(row);
    total += row;
  }
  loss(0) = static_cast<T>(R > 0 ? total / static_cast<double>(R) : 0.0);
}

// dz[r, c] = dloss / R (softmax(z)[r, c] - q[r, c]), assigned
template <class T>
void soft_cross_entropy_backward(tensor_view<T, 2> dz, tensor_view<const T, 1> dloss, tensor_view<const T, 2> z,
                                 tensor_view<const T, 1> lse, tensor_view<const T, 2> q) {
  const index_t R = z.extent(0), V = z.extent(1);
  const T g = R > 0 ? dloss(0) / static_cast<T>(R) : T(0);
  for (index_t r = 0; r < R; ++r)
    for (index_t c = 0; c < V; ++c) dz(r, c) = g * (std::exp(z(r, c) - lse(r)) - q(r, c));
}

}  // namespace detail

// loss (1) = the ITC loss of B pairs (and the extras of opt as further negatives); fills cache.
template <backend Be, class T, class Loss, class ImageFeats, class TextFeat, class Temp>
void itc_forward(Be& be, Loss&& loss, itc_cache<T>& cache, ImageFeats&& image_feats, TextFeat&& text_feat,
                 Temp&& temp, const itc_options<T>& opt = {}) {
  constexpr std::string_view op = "itc_forward";
  static_assert(Be::memory_space::host_accessible, "itc_forward: the ITC head runs on host memory");
  auto l = detail::arg_view<Be, 1>(loss);                            // (1)
  auto img = detail::as_const(detail::arg_view<Be, 3>(image_feats));  // (B, Q, D)
  auto txt = detail::as_const(detail::arg_view<Be, 2>(text_feat));    // (B, D)
  auto tmp = detail::as_const(detail::arg_view<Be, 0>(temp));         // ()
  static_assert(std::is_same_v<typename decltype(l)::element_type, T> &&
                    std::is_same_v<typename decltype(img)::value_type, T> &&
                    std::is_same_v<typename decltype(txt)::value_type, T> &&
                    std::is_same_v<typename decltype(tmp)::value_type, T>,
                "itc_forward: loss, image_feats, text_feat, temp and the cache must have the same element type");
  const index_t B = img.extent(0), Q = img.extent(1), D = img.extent(2);
  detail::check_shape(op, "loss", l, {1});
  detail::check_shape(op, "text_feat", txt, {B, D});
  BLIP2_CHECK(B >= 1 && Q >= 1 && D >= 1, shape_error, op, ": image_feats has shape ", shape_string(img),
              "; at least one pair, one query and one feature are needed");
  const auto& ex = opt.extra;
  const bool extras = ex.image_feats.data() != nullptr || ex.text_feat.data() != nullptr;
  const index_t Bo = extras ? ex.image_feats.extent(0) : 0;
  if (extras) {
    detail::check_shape(op, "extra.image_feats", ex.image_feats, {Bo, Q, D});
    detail::check_shape(op, "extra.text_feat", ex.text_feat, {Bo, D});
  }
  const index_t off = ex.local_offset;
  BLIP2_CHECK(off >= 0 && off <= Bo, value_error, op, ": extra.local_offset = ", off, " must be in [0, ", Bo,
              "] (the number of extra pairs)");
  const index_t Ba = B + Bo;
  const bool soft = opt.image_ids.data() != nullptr;
  if (soft) detail::check_shape(op, "image_ids", opt.image_ids, {Ba});
  detail::check_smoothing(op, opt.label_smoothing);
  const T t = tmp();
  BLIP2_CHECK(std::isfinite(static_cast<double>(t)) && t != T(0), value_error, op, ": temp = ", t,
              " must be finite and non-zero (the logits are similarity / temp)");

  cache.B = B, cache.Ba = Ba, cache.Q = Q, cache.D = D, cache.offset = off;
  cache.extras = extras, cache.soft = soft, cache.label_smoothing = opt.label_smoothing, cache.temp = t;
  cache.detach_gathered_side = opt.detach_gathered_side;
  cache.image_feats = img;
  cache.text_feat = txt;
  lay_out(cache.storage, [&](auto& a) {
    cache.sim_i2t = a.template take<2>({B, Ba});
    cache.sim_t2i = a.template take<2>({B, Ba});
    cache.loss_i2t = a.template take<1>({1});
    cache.loss_t2i = a.template take<1>({1});
    cache.row_loss_i2t = a.template take<1>({B});
    cache.row_loss_t2i = a.template take<1>({B});
    cache.lse_i2t = a.template take<1>({B});
    cache.lse_t2i = a.template take<1>({B});
    cache.soft_targets = a.template take<2>({soft ? B : 0, Ba});
    cache.image_all = a.template take<3>({extras ? Ba : 0, Q, D});
    cache.text_all = a.template take<2>({extras ? Ba : 0, D});
    cache.dsim_i2t = a.template take<2>({B, Ba});
    cache.dsim_t2i = a.template take<2>({B, Ba});
    cache.dsim = a.template take<2>({B, Ba});
    cache.dsim_t = a.template take<2>({Ba, B});
    cache.dimage_i2t = a.template take<3>({B, Q, D});
    cache.dimage_all = a.template take<3>({Ba, Q, D});
    cache.dtext_all = a.template take<2>({Ba, D});
    cache.dhalf = a.template take<1>({1});
  });
  lay_out(cache.index_storage, [&](auto& a) {
    cache.targets = a.template take<1>({B});
    cache.count_i2t = a.template take<1>({1});
    cache.count_t2i = a.template take<1>({1});
  });

  // ---- similarities: (B, Ba) image -> text and (B, Ba) text -> image, divided by temp ----
  const double inv_t = 1.0 / static_cast<double>(t);
  detail::zero_dense(cache.sim_i2t);
  detail::zero_dense(cache.sim_t2i);
  if (extras) {
    // image_all / text_all = [extra[0, off) ; local ; extra[off, Bo)]
    copy(be, detail::first_dim_range(cache.image_all, 0, off), detail::first_dim_range(ex.image_feats, 0, off));
    copy(be, detail::first_dim_range(cache.image_all, off, off + B), img);
    copy(be, detail::first_dim_range(cache.image_all, off + B, Ba), detail::first_dim_range(ex.image_feats, off, Bo));
    copy(be, detail::first_dim_range(cache.text_all, 0, off), detail::first_dim_range(ex.text_feat, 0, off));
    copy(be, detail::first_dim_range(cache.text_all, off, off + B), txt);
    copy(be, detail::first_dim_range(cache.text_all, off + B, Ba), detail::first_dim_range(ex.text_feat, off, Bo));
    // sim_i2t = max_q image_feats . text_all^T / temp                               (B, Ba)
    itc_similarity_forward(be, cache.i2t, img, detail::as_const(cache.text_all));
    axpy(be, cache.sim_i2t, detail::as_const(cache.i2t.sim), inv_t);
    // sim_t2i = (max_q image_all . text_feat^T)^T / temp                             (B, Ba)
    itc_similarity_forward(be, cache.t2i, detail::as_const(cache.image_all), txt);
    axpy(be, cache.sim_t2i, transpose(detail::as_const(cache.t2i.sim)), inv_t);
  } else {
    // one rank: sim_t2i is the transpose of sim_i2t
    itc_similarity_forward(be, cache.i2t, img, txt);                                  // (B, B)
    axpy(be, cache.sim_i2t, detail::as_const(cache.i2t.sim), inv_t);
    axpy(be, cache.sim_t2i, transpose(detail::as_const(cache.i2t.sim)), inv_t);
  }

  // ---- cross-entropy in both directions ----
  auto l_i2t = cache.loss_i2t, l_t2i = cache.loss_t2i;
  if (!soft) {
    for (index_t b = 0; b < B; ++b) cache.targets(b) = off + b;  // the positive of pair b is column off + b
    cross_entropy_forward(be, l_i2t, cache.row_loss_i2t, cross_entropy_cache<T>{cache.lse_i2t, cache.count_i2t},
                          detail::as_const(cache.sim_i2t), detail::as_const(cache.targets), opt.label_smoothing);
    cross_entropy_forward(be, l_t2i, cache.row_loss_t2i, cross_entropy_cache<T>{cache.lse_t2i, cache.count_t2i},
                          detail::as_const(cache.sim_t2i), detail::as_const(cache.targets), opt.label_smoothing);
  } else {
    // q[b, :] = (1 - eps) pos[b, :] / npos[b] + eps / Ba; pos[b, off + b] is always 1, so npos >= 1
    const auto& ids = opt.image_ids;
    const double eps = opt.label_smoothing;
    for (index_t b = 0; b < B; ++b) {
      index_t npos = 0;
      for (index_t j = 0; j < Ba; ++j) npos += ids(j) == ids(off + b) ? 1 : 0;
      for (index_t j = 0; j < Ba; ++j)
        cache.soft_targets(b, j) = static_cast<T>((ids(j) == ids(off + b) ? (1.0 - eps) / static_cast<double>(npos) : 0.0) +
                                                  eps / static_cast<double>(Ba));
      cache.targets(b) = off + b;
    }
    detail::soft_cross_entropy_forward(l_i2t, cache.row_loss_i2t, cache.lse_i2t, detail::as_const(cache.sim_i2t),
                                       detail::as_const(cache.soft_targets));
    detail::soft_cross_entropy_forward(l_t2i, cache.row_loss_t2i, cache.lse_t2i, detail::as_const(cache.sim_t2i),
                                       detail::as_const(cache.soft_targets));
  }
  l(0) = (cache.loss_i2t(0) + cache.loss_t2i(0)) / T(2);
}

// dimage_feats (B, Q, D) and dtext_feat (B, D): assigned (or added with grad_write::accumulate);
// dtemp (rank 0) +=. dloss (1) is the gradient of the loss.
template <backend Be, class T, class DImage, class DText, class DTemp, class DLoss>
void itc_backward(Be& be, DImage&& dimage_feats, DText&& dtext_feat, DTemp&& dtemp, DLoss&& dloss, itc_cache<T>& cache,
                  grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "itc_backward";
  auto di = detail::arg_view<Be, 3>(dimage_feats);               // (B, Q, D)
  auto dt = detail::arg_view<Be, 2>(dtext_feat);                 // (B, D)
  auto dtp = detail::arg_view<Be, 0>(dtemp);                     // ()
  auto dl = detail::as_const(detail::arg_view<Be, 1>(dloss));    // (1)
  static_assert(std::is_same_v<typename decltype(di)::element_type, T> &&
                    std::is_same_v<typename decltype(dt)::element_type, T> &&
                    std::is_same_v<typename decltype(dtp)::element_type, T> &&
                    std::is_same_v<typename decltype(dl)::value_type, T>,
                "itc_backward: the gradients, dloss and the cache must have the same element type");
  const index_t B = cache.B, Ba = cache.Ba, Q = cache.Q, D = cache.D, off = cache.offset;
  BLIP2_CHECK(cache.sim_i2t.data() != nullptr, value_error, op, ": the cache is empty; call itc_forward first");
  detail::check_shape(op, "dimage_feats", di, {B, Q, D});
  detail::check_shape(op, "dtext_feat", dt, {B, D});
  detail::check_shape(op, "dloss", dl, {1});
  const T t = cache.temp;
  const double inv_t = 1.0 / static_cast<double>(t);

  // loss = (loss_i2t + loss_t2i) / 2
  cache.dhalf(0) = dl(0) / T(2);
  auto dhalf = detail::as_const(cache.dhalf);
  // loss_x = CE(sim_x, targets)  (or the soft-target cross-entropy)
  if (!cache.soft) {
    cross_entropy_backward(be, cache.dsim_i2t, dhalf, detail::as_const(cache.sim_i2t), detail::as_const(cache.targets),
                           cross_entropy_cache<T>{cache.lse_i2t, cache.count_i2t}, cache.label_smoothing);
    cross_entropy_backward(be, cache.dsim_t2i, dhalf, detail::as_const(cache.sim_t2i), detail::as_const(cache.targets),
                           cross_entropy_cache<T>{cache.lse_t2i, cache.count_t2i}, cache.label_smoothing);
  } else {
    detail::soft_cross_entropy_backward(cache.dsim_i2t, dhalf, detail::as_const(cache.sim_i2t),
                                        detail::as_const(cache.lse_i2t), detail::as_const(cache.soft_targets));
    detail::soft_cross_entropy_backward(cache.dsim_t2i, dhalf, detail::as_const(cache.sim_t2i),
                                        detail::as_const(cache.lse_t2i), detail::as_const(cache.soft_targets));
  }
  // sim_x = s_x / temp: dtemp += -sum(dsim_x * s_x) / temp^2 = -sum(dsim_x * sim_x) / temp
  double acc = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t j = 0; j < Ba; ++j)
      acc += static_cast<double>(cache.dsim_i2t(b, j)) * static_cast<double>(cache.sim_i2t(b, j)) +
             static_cast<double>(cache.dsim_t2i(b, j)) * static_cast<double>(cache.sim_t2i(b, j));
  dtp() += static_cast<T>(-acc * inv_t);

  // sim_i2t = s_i2t / temp, s_i2t (B, Ba) = max_q image_feats . text_all^T      (i2t state)
  // sim_t2i = s_t2i^T / temp, s_t2i (Ba, B) = max_q image_all . text_feat^T      (t2i state; without extras
  //           it is the i2t state itself: image_all = image_feats, text_all = text_feat)
  detail::zero_dense(cache.dsim);
  detail::zero_dense(cache.dsim_t);
  axpy(be, cache.dsim, detail::as_const(cache.dsim_i2t), inv_t);                   // (B, Ba)
  axpy(be, cache.dsim_t, transpose(detail::as_const(cache.dsim_t2i)), inv_t);      // (Ba, B)
  detail::zero_dense(cache.dimage_i2t);
  detail::zero_dense(cache.dimage_all);
  detail::zero_dense(cache.dtext_all);
  auto dimg_local = detail::first_dim_range(cache.dimage_all, off, off + B);  // (B, Q, D)
  auto dtxt_local = detail::first_dim_range(cache.dtext_all, off, off + B);   // (B, D)
  // i2t: into the local images and every text column
  itc_similarity_backward(be, cache.i2t, detail::as_const(cache.dsim), cache.dimage_i2t, cache.dtext_all);
  // LAVIS under torch.distributed: text_all is a detached gather, so sim_i2t sends nothing to the texts
  if (cache.detach_gathered_side) detail::zero_dense(cache.dtext_all);
  // t2i: into every image column and the local texts
  itc_similarity_backward(be, cache.extras ? cache.t2i : cache.i2t, detail::as_const(cache.dsim_t), cache.dimage_all,
                          dtxt_local);
  // only the local block flows back (the extras' gradients are dropped); detached: the images get only
  // sim_i2t's part
  if (mode == grad_write::assign) {
    copy(be, di, detail::as_const(cache.dimage_i2t));
    copy(be, dt, detail::as_const(dtxt_local));
  } else {
    axpy(be, di, detail::as_const(cache.dimage_i2t));
    axpy(be, dt, detail::as_const(dtxt_local));
  }
  if (!cache.detach_gathered_side) axpy(be, di, detail::as_const(dimg_local));
}

}  // namespace blip2
