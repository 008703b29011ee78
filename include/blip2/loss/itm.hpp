// blip2/loss/itm.hpp: BLIP-2's image-text matching loss (ITM), forward and backward, and the layout of its
// 3B pairs (LAVIS Blip2Qformer.forward, "Image-text Matching").
//
// Dimensions: B local pairs, Ba = B + other ranks' pairs (the columns of ITC, loss/itc.hpp), off the
//             column of local pair 0 (rank * B).
//   pairs:    a hard-negative sampler (mining/) picks neg_image[b] (an image column for text b) and
//             neg_text[b] (a text column for image b); the 3B pairs are, as LAVIS concatenates them
//             (image_embeds_all = [pos, neg, pos], text_ids_all = [pos, pos, neg]):
//               rows [0, B)     image off + b,        text off + b          label 1 (match)
//               rows [B, 2B)    image neg_image[b],   text off + b          label 0
//               rows [2B, 3B)   image off + b,        text neg_text[b]      label 0
//             itm_pair_layout() writes each row's image and text column (indices into the gathered
//             images / texts; with one rank simply into the batch).
//   forward:  logits (3B, 2) = itm_head_state's mean over queries of itm_head(query outputs);
//             loss = CE(logits, labels), no label smoothing, mean over the 3B rows
//   backward: dlogits (3B, 2) assigned, or added with grad_write::accumulate
// The sampling has no gradient (LAVIS draws under torch.no_grad()).
#pragma once
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/loss/cross_entropy.hpp"

namespace blip2 {

template <class T>
struct itm_cache {
  index_t B = 0;
  tensor_view<index_t, 1> labels;  // (3B) 1 for rows [0, B), 0 after
  tensor_view<T, 1> row_loss;      // (3B) for logging
  tensor_view<T, 1> lse;           // (3B)
  tensor_view<index_t, 1> count;   // (1)
  std::vector<T> storage;
  std::vector<index_t> index_storage;
};

// image_index (3B) and text_index (3B): the columns of each ITM pair, from the sampled negatives (B each).
template <class NegImage, class NegText, class ImageIndex, class TextIndex>
void itm_pair_layout(NegImage&& neg_image, NegText&& neg_text, ImageIndex&& image_index, TextIndex&& text_index,
                     index_t local_offset = 0) {
  constexpr std::string_view op = "itm_pair_layout";
  auto ni = detail::as_const(view(neg_image));   // (B)
  auto nt = detail::as_const(view(neg_text));    // (B)
  auto ii = view(image_index);                   // (3B)
  auto ti = view(text_index);                    // (3B)
  static_assert(decltype(ni)::rank == 1 && decltype(nt)::rank == 1 && decltype(ii)::rank == 1 && decltype(ti)::rank == 1,
                "itm_pair_layout: every argument is a rank-1 index tensor");
  static_assert(std::is_same_v<typename decltype(ni)::value_type, index_t> &&
                    std::is_same_v<typename decltype(nt)::value_type, index_t> &&
                    std::is_same_v<typename decltype(ii)::element_type, index_t> &&
                    std::is_same_v<typename decltype(ti)::element_type, index_t>,
                "itm_pair_layout: indices are int64 (blip2::index_t); image_index and text_index are written");
  const index_t B = ni.extent(0);
  detail::check_shape(op, "neg_text", nt, {B});
  detail::check_shape(op, "image_index", ii, {3 * B});
  detail::check_shape(op, "text_index", ti, {3 * B});
  BLIP2_CHECK(local_offset >= 0, value_error, op, ": local_offset = ", local_offset, " must be >= 0");
  for (index_t b = 0; b < B; ++b) {
    ii(b) = local_offset + b;          // (image b, text b)          positive
    ti(b) = local_offset + b;
    ii(B + b) = ni(b);                 // (negative image, text b)
    ti(B + b) = local_offset + b;
    ii(2 * B + b) = local_offset + b;  // (image b, negative text)
    ti(2 * B + b) = nt(b);
  }
}

// loss (1) = CE(logits (3B, 2), [1] * B + [0] * 2B), mean over the 3B rows.
template <backend Be, class T, class Loss, class Logits>
void itm_forward(Be& be, Loss&& loss, itm_cache<T>& cache, Logits&& logits) {
  constexpr std::string_view op = "itm_forward";
  static_assert(Be::memory_space::host_accessible, "itm_forward: the labels are written on the host");
  auto z = detail::as_const(detail::arg_view<Be, 2>(logits));  // (3B, 2)
  const index_t R = z.extent(0);
  BLIP2_CHECK(z.extent(1) == 2, shape_error, op, ": logits have shape ", shape_string(z),
              "; ITM has 2 classes (no match, match)");
  BLIP2_CHECK(R >= 3 && R % 3 == 0, shape_error, op, ": logits have shape ", shape_string(z),
              "; ITM has 3B rows (B positives, B negative images, B negative texts), B >= 1");
  const index_t B = R / 3;
  cache.B = B;
  lay_out(cache.storage, [&](auto& a) {
    cache.row_loss = a.template take<1>({R});
    cache.lse = a.template take<1>({R});
  });
  lay_out(cache.index_storage, [&](auto& a) {
    cache.labels = a.template take<1>({R});
    cache.count = a.template take<1>({1});
  });
  for (index_t r = 0; r < R; ++r) cache.labels(r) = r < B ? 1 : 0;
  cross_entropy_forward(be, loss, cache.row_loss, cross_entropy_cache<T>{cache.lse, cache.count}, z,
                        detail::as_const(cache.labels));
}

// dlogits (3B, 2): assigned, or added with grad_write::accumulate.
template <backend Be, class T, class DLogits, class DLoss, class Logits>
void itm_backward(Be& be, DLogits&& dlogits, DLoss&& dloss, Logits&& logits, itm_cache<T>& cache,
                  grad_write mode = grad_write::assign) {
  BLIP2_CHECK(cache.labels.data() != nullptr, value_error, "itm_backward: the cache is empty; call itm_forward first");
  cross_entropy_backward(be, dlogits, dloss, logits, detail::as_const(cache.labels),
                         cross_entropy_cache<T>{cache.lse, cache.count}, 0.0, default_ignore_index, mode);
}

}  // namespace blip2
