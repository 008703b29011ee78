// blip2/models/qformer/image_kv.hpp: the image side of the Q-Former's cross-attention, once per image.
//
// Dimensions: B images, Bp batch elements of a pass, N image tokens, E image width, C hidden.
//   k[l], v[l] = image W_k' + b_k', image W_v' + b_v'      (B, N, C), every layer l with cross-attention
// encode_image_kv() computes them once; every pass that cross-attends reads them (ITM's pairs through an
// index, for_pass()), and adds its gradient into dk[l], dv[l]; encode_image_kv_backward() turns those
// into the gradients of the image embeddings and of the key/value weights.
// concat_image_kv() joins two states' K/V (copies, no projection) so that one pass reads both image sets
// through one index; split_image_kv_grads() adds that pass's K/V gradients back into the two states.
#pragma once
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/core/buffer.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/models/qformer/model.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/linear.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
struct image_kv_state {
  index_t B = 0, N = 0;
  tensor_view<const T, 3, Space> image;         // (B, N, E): the encoder output, read again by backward
  std::vector<tensor_view<T, 3, Space>> k, v;   // per layer (B, N, C); empty views where a layer has no cross
  std::vector<tensor_view<T, 3, Space>> dk, dv; // their gradients, accumulated by every pass that reads them
  buffer<T, Space> storage;
};

namespace detail {
// dst[b] = src[index[b]], (N, C) blocks: one embedding lookup over rows of N C elements
template <class Be, class T, memory_space Space>
void gather_images(Be& be, tensor_view<T, 3, Space> dst, tensor_view<T, 3, Space> src, tensor_view<const index_t, 1, Space> index) {
  const index_t B = dst.extent(0), NC = dst.extent(1) * dst.extent(2);
  check_contiguous("gather_images", "dst", dst);
  check_contiguous("gather_images", "src", src);
  embedding_forward(be, tensor_view<T, 2, Space>(dst.data(), {B, NC}), index,
                    tensor_view<const T, 2, Space>(src.data(), {src.extent(0), NC}));
}
// dsrc[index[b]] += ddst[b] (pairs sharing an image add up, in pair order)
template <class Be, class T, memory_space Space>
void scatter_add_images(Be& be, tensor_view<T, 3, Space> dsrc, tensor_view<T, 3, Space> ddst, tensor_view<const index_t, 1, Space> index) {
  const index_t B = ddst.extent(0), NC = ddst.extent(1) * ddst.extent(2);
  check_contiguous("scatter_add_images", "dsrc", dsrc);
  check_contiguous("scatter_add_images", "ddst", ddst);
  embedding_backward(be, tensor_view<T, 2, Space>(dsrc.data(), {dsrc.extent(0), NC}),
                     tensor_view<const T, 2, Space>(ddst.data(), {B, NC}), index);
}
// st's K/V and their gradients, (B, N, C) per layer with cross-attention (empty views elsewhere)
template <class T, memory_space Space>
void lay_out_image_kv(const qformer_model<T, Space>& m, image_kv_state<T, Space>& st, index_t B, index_t N) {
  const index_t C = m.config().qformer.hidden_size;
  const std::size_t L = m.w.layers.size();
  st.B = B;
  st.N = N;
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
}
}  // namespace detail

// The image K/V that one pass's batch elements attend to in layer l: the images themselves (index empty:
// element b reads image b), or each element's image gathered into ck, cv (B_pass, N, C) by index.
template <class T, memory_space Space = host_space>
struct pass_image_kv {
  image_kv_state<T, Space>* image = nullptr;
  tensor_view<const index_t, 1, Space> index;  // image of each batch element (B_pass); empty: b -> b

  bool gathered() const { return index.data() != nullptr; }
  // keys and values of layer l for the pass: the images', or ck, cv (B_pass, N, C) when gathered
  std::pair<tensor_view<const T, 3, Space>, tensor_view<const T, 3, Space>> keys_values(std::size_t l, tensor_view<T, 3, Space> ck,
                                                                          tensor_view<T, 3, Space> cv) const {
    if (!gathered()) return {image->k[l], image->v[l]};
    return {ck, cv};
  }
  // the same, gathering each element's image into ck, cv first when there is an index
  template <backend Be>
  std::pair<tensor_view<const T, 3, Space>, tensor_view<const T, 3, Space>> forward(Be& be, std::size_t l, tensor_view<T, 3, Space> ck,
                                                                      tensor_view<T, 3, Space> cv) const {
    if (gathered()) {
      detail::gather_images(be, ck, image->k[l], index);
      detail::gather_images(be, cv, image->v[l], index);
    }
    return keys_values(l, ck, cv);
  }
  // where the pass writes their gradient: straight into the image state (added), or into dck, dcv
  // (assigned) that backward_done() then scatters to the images
  std::pair<tensor_view<T, 3, Space>, tensor_view<T, 3, Space>> grads(std::size_t l, tensor_view<T, 3, Space> dck,
                                                        tensor_view<T, 3, Space> dcv) const {
    if (!gathered()) return {image->dk[l], image->dv[l]};
    return {dck, dcv};
  }
  grad_write grad_mode() const { return gathered() ? grad_write::assign : grad_write::accumulate; }
  template <backend Be>
  void backward_done(Be& be, std::size_t l, tensor_view<T, 3, Space> dck, tensor_view<T, 3, Space> dcv) const {
    if (!gathered()) return;
    detail::scatter_add_images(be, image->dk[l], dck, index);
    detail::scatter_add_images(be, image->dv[l], dcv, index);
  }
};

// k[l], v[l] = image W_k', image W_v' for every cross-attention layer; zeroes their gradients.
template <backend Be, class T, memory_space Space, class Img>
void encode_image_kv(Be& be, const qformer_model<T, Space>& m, image_kv_state<T, Space>& st, Img&& image_embeds) {
  const auto& cfg = m.config().qformer;
  auto img = detail::as_const(detail::arg_view<Be, 3>(image_embeds));  // (B, N, E)
  static_assert(std::is_same_v<typename decltype(img)::value_type, T>, "encode_image_kv: image_embeds has another element type than the model");
  BLIP2_CHECK(img.extent(2) == cfg.encoder_hidden_size, shape_error, "qformer: image_embeds has shape ",
              shape_string(img), " but its last dimension must be encoder_hidden_size = ", cfg.encoder_hidden_size);
  BLIP2_CHECK(img.is_contiguous(), shape_error, "qformer: image_embeds of shape ", shape_string(img), " must be contiguous");
  BLIP2_CHECK(img.extent(1) > 0, shape_error, "qformer: image_embeds has shape ", shape_string(img),
              ": cross-attention needs at least one image token (N >= 1)");
  const index_t B = img.extent(0), N = img.extent(1);
  const std::size_t L = m.w.layers.size();
  detail::lay_out_image_kv(m, st, B, N);
  st.image = img;
  const auto img_rows = flat_rows(img);  // (B N, E)
  for (std::size_t l = 0; l < L; ++l) {
    const auto& cw = m.w.layers[l].cross;
    if (!m.w.layers[l].has_cross) continue;
    linear_forward(be, flat_rows(st.k[l]), img_rows, cw.key.weight, cw.key.bias);      // (B N, C)
    linear_forward(be, flat_rows(st.v[l]), img_rows, cw.value.weight, cw.value.bias);  // (B N, C)
    fill(be, st.dk[l], T{});
    fill(be, st.dv[l], T{});
  }
}

// From the accumulated dk, dv: the key/value weight gradients and dimage (added; an empty view skips it).
template <backend Be, class T, memory_space Space>
void encode_image_kv_backward(Be& be, qformer_model<T, Space>& m, image_kv_state<T, Space>& st, tensor_view<T, 3, Space> dimage = {}) {
  if (dimage.data())
    detail::check_shape("encode_image_kv_backward", "dimage", dimage, st.image.extents());
  const auto img_rows = flat_rows(st.image);                                        // (B N, E)
  const tensor_view<T, 2, Space> drows = dimage.data() ? flat_rows(dimage) : tensor_view<T, 2, Space>{};
  for (std::size_t l = 0; l < m.w.layers.size(); ++l) {
    if (!m.w.layers[l].has_cross) continue;
    const auto& cw = m.w.layers[l].cross;
    auto& cg = m.g.layers[l].cross;
    // k = image W_k' + b ; v = image W_v' + b
    linear_backward(be, drows, cg.key.weight, cg.key.bias, flat_rows(st.dk[l]), img_rows, cw.key.weight,
                    grad_write::accumulate);
    linear_backward(be, drows, cg.value.weight, cg.value.bias, flat_rows(st.dv[l]), img_rows, cw.value.weight,
                    grad_write::accumulate);
  }
}

namespace detail {
// images [i0, i0 + n) of a (B, N, C) K/V view
template <class T, memory_space Space>
tensor_view<T, 3, Space> image_block(const tensor_view<T, 3, Space>& v, index_t i0, index_t n) {
  return {v.data() + i0 * v.extent(1) * v.extent(2), {n, v.extent(1), v.extent(2)}};
}
}  // namespace detail

// out = [a ; b] along the images: k[l], v[l] (a.B + b.B, N, C) copied from both, gradients zeroed. out has
// no image embeddings (out.image is empty): its gradients go back with split_image_kv_grads, not
// encode_image_kv_backward.
template <backend Be, class T, memory_space Space>
void concat_image_kv(Be& be, const qformer_model<T, Space>& m, image_kv_state<T, Space>& out, const image_kv_state<T, Space>& a,
                     const image_kv_state<T, Space>& b) {
  BLIP2_CHECK(a.N == b.N, shape_error, "concat_image_kv: the states have ", a.N, " and ", b.N, " image tokens");
  const index_t B = a.B + b.B, N = a.N;
  const std::size_t L = m.w.layers.size();
  detail::lay_out_image_kv(m, out, B, N);
  out.image = {};
  for (std::size_t l = 0; l < L; ++l) {
    if (!m.w.layers[l].has_cross) continue;
    copy(be, detail::image_block(out.k[l], 0, a.B), detail::as_const(a.k[l]));
    copy(be, detail::image_block(out.k[l], a.B, b.B), detail::as_const(b.k[l]));
    copy(be, detail::image_block(out.v[l], 0, a.B), detail::as_const(a.v[l]));
    copy(be, detail::image_block(out.v[l], a.B, b.B), detail::as_const(b.v[l]));
    fill(be, out.dk[l], T{});
    fill(be, out.dv[l], T{});
  }
}

// a.dk, a.dv += out's gradients of images [0, a.B); b.dk, b.dv += those of [a.B, a.B + b.B).
template <backend Be, class T, memory_space Space>
void split_image_kv_grads(Be& be, const qformer_model<T, Space>& m, const image_kv_state<T, Space>& out,
                          image_kv_state<T, Space>& a, image_kv_state<T, Space>& b) {
  BLIP2_CHECK(out.B == a.B + b.B, shape_error, "split_image_kv_grads: ", out.B, " images are not ", a.B, " + ", b.B);
  for (std::size_t l = 0; l < m.w.layers.size(); ++l) {
    if (!m.w.layers[l].has_cross) continue;
    axpy(be, a.dk[l], detail::as_const(detail::image_block(out.dk[l], 0, a.B)));
    axpy(be, a.dv[l], detail::as_const(detail::image_block(out.dv[l], 0, a.B)));
    axpy(be, b.dk[l], detail::as_const(detail::image_block(out.dk[l], a.B, b.B)));
    axpy(be, b.dv[l], detail::as_const(detail::image_block(out.dv[l], a.B, b.B)));
  }
}

}  // namespace blip2
