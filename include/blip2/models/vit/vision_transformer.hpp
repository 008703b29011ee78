// blip2/models/vit/vision_transformer.hpp: the frozen image encoder of BLIP-2, EVA ViT-g/14 as Hugging Face's
// Blip2VisionModel computes it. Forward only (the encoder is frozen), on any backend, through the ops.
//
// Dimensions: B images, H x W image size (pixels), P patch size, gh = H / P, gw = W / P patch grid,
//             N = 1 + gh gw tokens (class token first), E hidden, F MLP width, NH heads, HS = E / NH,
//             K = 3 P P (one patch, flattened channel-major: c, ky, kx, as the conv weight (E, 3, P, P)),
//             c images in one chunk (buffers are sized for a chunk and reused for every chunk and layer).
//
// The model (pre-LN ViT; Hugging Face Blip2VisionEmbeddings / Blip2EncoderLayer / Blip2VisionModel):
//   patches  = im2col(pixel_values)                                  (gh gw, K) per image
//   x        = [class_embedding ; patches W_patch^T + b_patch] + pos (N, E): the conv with stride = kernel
//                                                                    = P is exactly this linear map
//   pos      = position_embedding, or, when (gh, gw) differs from the checkpoint's G0 x G0, its G0 x G0 grid
//              resized bicubically to gh x gw (torch.nn.functional.interpolate, mode "bicubic",
//              align_corners False, a = -0.75, as LAVIS's interpolate_pos_embed); the class position
//              is kept as it is
//   layer l:
//     h   = LayerNorm1(x)
//     qkv = h W_qkv^T + [q_bias ; 0 ; v_bias]                        (N, 3E): q | k | v, head h of each is
//                                                                    channels [h HS, (h + 1) HS)
//     x   = x + projection(attention(q, k, v))                       softmax(q k^T / sqrt(HS)) v, no mask
//     h   = LayerNorm2(x)
//     x   = x + fc2(gelu(fc1(h)))                                    exact erf GELU
//   image_embeds = post_layernorm(x)                                 (B, N, E): what the Q-Former reads
// LayerNorm eps is vision_config.layer_norm_eps (1e-6) everywhere.
//
// Activations are sequence-major, as in every model (core/rows.hpp): row p c + i is token p of image i of
// the chunk; a layer is a pre-LN attention block and a pre-LN feed-forward block (blocks/).
//
// Parameters are views into one arena, named as Hugging Face names them (prefix "vision_model."):
//   embeddings.class_embedding (1, 1, E)      embeddings.patch_embedding.weight (E, 3, P, P), .bias (E)
//   embeddings.position_embedding (1, 1 + G0^2, E)
//   encoder.layers.{l}.layer_norm1.{weight,bias} (E)     encoder.layers.{l}.self_attn.qkv.weight (3E, E)
//   encoder.layers.{l}.self_attn.qkv.bias (3E)  (only with qkv_bias; Hugging Face stores q_bias, a zero
//                                                key bias and v_bias concatenated; used as stored)
//   encoder.layers.{l}.self_attn.projection.{weight (E, E), bias (E)}
//   encoder.layers.{l}.layer_norm2.{weight,bias} (E)
//   encoder.layers.{l}.mlp.fc1.{weight (F, E), bias (F)}  encoder.layers.{l}.mlp.fc2.{weight (E, F), bias (E)}
//   post_layernorm.{weight,bias} (E)
#pragma once
#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "blip2/blocks/attention_block.hpp"
#include "blip2/blocks/feed_forward_block.hpp"
#include "blip2/blocks/kv_cache.hpp"
#include "blip2/blocks/row_plan.hpp"
#include "blip2/blocks/weights.hpp"
#include "blip2/core/arena.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/models/vit/config.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/nn/transfer.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"

namespace blip2 {

// ---------------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------------
template <class T, memory_space S = host_space>
struct vision_layer_weights {
  linear_weights<T, S> qkv;            // self_attn.qkv         (3E, E), bias (3E) or empty without qkv_bias
  attention_weights<T, S> attention;  // query, key, value: views of qkv's three row blocks;
                                    // dense: self_attn.projection (E, E), (E); norm: layer_norm1 (E)
  feed_forward_weights<T, S> mlp;   // intermediate: mlp.fc1 (F, E), (F); output: mlp.fc2 (E, F), (E);
                                    // norm: layer_norm2 (E)
};
template <class T, memory_space S = host_space>
struct vision_weights {
  tensor_view<T, 3, S> class_embedding;     // (1, 1, E)
  tensor_view<T, 4, S> patch_weight;        // (E, 3, P, P)
  tensor_view<T, 1, S> patch_bias;          // (E)
  tensor_view<T, 3, S> position_embedding;  // (1, 1 + G0^2, E)
  std::vector<vision_layer_weights<T, S>> layers;
  layer_norm_weights<T, S> post_norm;       // post_layernorm (E)
};

// Calls f(name, view) for every parameter (Hugging Face names, "vision_model." prefix), in one fixed
// order: the order of the arena.
template <class T, memory_space S, class F>
void for_each_vision_parameter(const vision_config& cfg, vision_weights<T, S>& w, F&& f) {
  const std::string p = "vision_model.";
  auto lin = [&](const std::string& n, linear_weights<T, S>& l, bool bias = true) {
    f(n + ".weight", l.weight);
    if (bias) f(n + ".bias", l.bias);
  };
  auto ln = [&](const std::string& n, layer_norm_weights<T, S>& l) {
    f(n + ".weight", l.weight);
    f(n + ".bias", l.bias);
  };
  f(p + "embeddings.class_embedding", w.class_embedding);
  f(p + "embeddings.patch_embedding.weight", w.patch_weight);
  f(p + "embeddings.patch_embedding.bias", w.patch_bias);
  f(p + "embeddings.position_embedding", w.position_embedding);
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    const std::string q = p + "encoder.layers." + std::to_string(l);
    ln(q + ".layer_norm1", L.attention.norm);
    lin(q + ".self_attn.qkv", L.qkv, cfg.qkv_bias);
    lin(q + ".self_attn.projection", L.attention.dense);
    ln(q + ".layer_norm2", L.mlp.norm);
    lin(q + ".mlp.fc1", L.mlp.intermediate);
    lin(q + ".mlp.fc2", L.mlp.output);
  }
  ln(p + "post_layernorm", w.post_norm);
}

namespace detail {
// Shapes of every parameter under cfg (views with a null base).
template <class T, memory_space S>
void shape_vision_weights(const vision_config& cfg, vision_weights<T, S>& w) {
  const index_t E = cfg.hidden_size, F = cfg.intermediate_size, P = cfg.patch_size;
  auto lin = [](linear_weights<T, S>& l, index_t n, index_t k) {
    l.weight = {nullptr, {n, k}};
    l.bias = {nullptr, {n}};
  };
  auto ln = [&](layer_norm_weights<T, S>& l) {
    l.weight = {nullptr, {E}};
    l.bias = {nullptr, {E}};
  };
  w.class_embedding = {nullptr, {1, 1, E}};
  w.patch_weight = {nullptr, {E, vision_config::num_channels, P, P}};
  w.patch_bias = {nullptr, {E}};
  w.position_embedding = {nullptr, {1, cfg.num_positions(), E}};
  w.layers.assign(static_cast<std::size_t>(cfg.num_hidden_layers), {});
  for (auto& L : w.layers) {
    ln(L.attention.norm);
    lin(L.qkv, 3 * E, E);
    if (!cfg.qkv_bias) L.qkv.bias = {};
    lin(L.attention.dense, E, E);
    ln(L.mlp.norm);
    lin(L.mlp.intermediate, F, E);
    lin(L.mlp.output, E, F);
  }
  ln(w.post_norm);
}
// query, key, value = the three (E, E) row blocks of qkv (and of its bias, when there is one)
template <class T, memory_space S>
void split_qkv(vision_layer_weights<T, S>& L) {
  const index_t E = L.qkv.weight.extent(1);
  linear_weights<T, S>* parts[3] = {&L.attention.query, &L.attention.key, &L.attention.value};
  for (index_t i = 0; i < 3; ++i) {
    parts[i]->weight = row_range(L.qkv.weight, i * E, (i + 1) * E);  // (E, E)
    parts[i]->bias = L.qkv.bias.data() ? row_range(L.qkv.bias, i * E, (i + 1) * E) : tensor_view<T, 1, S>{};
  }
}
}  // namespace detail

// How the layers' parameters are stored: each layer its own (a real checkpoint), or all layers viewing
// one layer's parameters (benchmarks: the work of L layers in the memory of one; ViT-g/14 in float32 is
// 4 GB otherwise).
enum class vision_storage { per_layer, shared_layers };

// The frozen image encoder: its configuration and its parameters (one arena, no gradients), in memory
// space Space (a device model's parameters are unspecified until loaded: to_space() copies a host model's).
template <class T, memory_space Space = host_space>
class vision_model {
 public:
  explicit vision_model(const vision_config& cfg, vision_storage storage = vision_storage::per_layer)
      : cfg_(validated(cfg)), storage_(storage) {
    detail::shape_vision_weights(cfg_, w);
    // two walks over the parameters: count (null base), then bind views into the arena
    index_t offset = 0;
    T* base = nullptr;
    auto take = [&](auto& v) {
      v = {base ? base + offset : nullptr, v.extents()};
      offset += v.size();
    };
    auto walk = [&] {
      offset = 0;
      take(w.class_embedding);
      take(w.patch_weight);
      take(w.patch_bias);
      take(w.position_embedding);
      for (std::size_t l = 0; l < w.layers.size(); ++l) {
        auto& L = w.layers[l];
        if (storage == vision_storage::shared_layers && l > 0) {
          L = w.layers[0];  // the same views
          continue;
        }
        take(L.attention.norm.weight), take(L.attention.norm.bias);
        take(L.qkv.weight);
        if (cfg_.qkv_bias) take(L.qkv.bias);
        take(L.attention.dense.weight), take(L.attention.dense.bias);
        take(L.mlp.norm.weight), take(L.mlp.norm.bias);
        take(L.mlp.intermediate.weight), take(L.mlp.intermediate.bias);
        take(L.mlp.output.weight), take(L.mlp.output.bias);
      }
      take(w.post_norm.weight);
      take(w.post_norm.bias);
    };
    walk();
    params_.reserve_elements(static_cast<std::size_t>(offset));  // zeros on the host
    base = params_.data();
    walk();
    for (auto& L : w.layers) detail::split_qkv(L);
  }
  vision_model(const vision_model&) = delete;  // the views point into this object's arena
  vision_model& operator=(const vision_model&) = delete;
  vision_model(vision_model&&) = default;      // the buffer keeps its memory when moved
  vision_model& operator=(vision_model&&) = default;

  const vision_config& config() const { return cfg_; }
  vision_storage storage() const { return storage_; }
  // every parameter as one flat view, in the order of for_each_vision_parameter (one layer's worth with
  // shared_layers storage)
  tensor_view<T, 1, Space> parameter_view() { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  tensor_view<const T, 1, Space> parameter_view() const { return {params_.data(), {static_cast<index_t>(params_.size())}}; }
  std::span<T> parameters() requires(Space::host_accessible) { return {params_.data(), params_.size()}; }
  std::span<const T> parameters() const requires(Space::host_accessible) { return {params_.data(), params_.size()}; }

  vision_weights<T, Space> w;  // by Hugging Face name (for_each_vision_parameter)

 private:
  static vision_config validated(const vision_config& c) {
    check_vision_config(c, "vision_model");
    return c;
  }
  vision_config cfg_;
  vision_storage storage_;
  buffer<T, Space> params_;
};

// Scalars in a vision model's parameters (per_layer storage).
inline index_t vision_parameter_count(const vision_config& cfg) {
  vision_weights<float> w;
  detail::shape_vision_weights(cfg, w);
  index_t n = 0;
  for_each_vision_parameter(cfg, w, [&](const std::string&, auto& v) { n += v.size(); });
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Position embeddings at another grid: PyTorch's bicubic interpolation (align_corners False)
// ---------------------------------------------------------------------------------------------------
namespace detail {

// The four weights of torch's cubic convolution (a = -0.75) for a sample at fraction t in [0, 1) past
// its base index: weights of indices base - 1, base, base + 1, base + 2.
inline void cubic_weights(double t, double w[4]) {
  constexpr double a = -0.75;
  auto near = [](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };       // |x| <= 1
  auto far = [](double x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };  // 1 < |x| < 2
  w[0] = far(t + 1);
  w[1] = near(t);
  w[2] = near(1 - t);
  w[3] = far(2 - t);
}

// Output index o of a resize from `in` to `out` samples: base index and the 4 weights. The source
// coordinate is (o + 0.5) in / out - 0.5 (align_corners False; torch does not clamp it at 0 for cubic);
// indices outside [0, in) are clamped to the border when read.
struct cubic_tap {
  index_t base;
  double w[4];
};
inline std::vector<cubic_tap> cubic_taps(index_t in, index_t out) {
  std::vector<cubic_tap> taps(static_cast<std::size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (index_t o = 0; o < out; ++o) {
    const double src = scale * (static_cast<double>(o) + 0.5) - 0.5;
    const double f = std::floor(src);
    auto& tap = taps[static_cast<std::size_t>(o)];
    tap.base = static_cast<index_t>(f);
    cubic_weights(src - f, tap.w);
  }
  return taps;
}

}  // namespace detail

// pos (1, 1 + G0^2, E), G0 x G0 grid row-major after the class position -> out (1, 1 + gh gw, E):
// the class position copied, the grid resized bicubically (in double) to gh x gw.
template <class T, class U>
void interpolate_position_embedding(tensor_view<T, 3> out, tensor_view<const U, 3> pos, index_t gh, index_t gw) {
  constexpr std::string_view op = "interpolate_position_embedding";
  const index_t E = pos.extent(2), n0 = pos.extent(1) - 1;
  const auto g0 = static_cast<index_t>(std::llround(std::sqrt(static_cast<double>(std::max<index_t>(n0, 0)))));
  BLIP2_CHECK(pos.extent(0) == 1 && n0 >= 1 && g0 * g0 == n0, shape_error, op, ": position_embedding has shape ",
              shape_string(pos), ", expected (1, 1 + G0^2, E) for a square G0 x G0 patch grid");
  BLIP2_CHECK(gh >= 1 && gw >= 1, shape_error, op, ": the target grid ", gh, " x ", gw, " must be at least 1 x 1");
  detail::check_shape(op, "out", out, {1, 1 + gh * gw, E});
  for (index_t e = 0; e < E; ++e) out(0, 0, e) = static_cast<T>(pos(0, 0, e));  // class position kept
  const auto ty = detail::cubic_taps(g0, gh), tx = detail::cubic_taps(g0, gw);
  auto clamp = [&](index_t i) { return std::clamp<index_t>(i, 0, g0 - 1); };
  std::vector<double> row(static_cast<std::size_t>(E));
  for (index_t y = 0; y < gh; ++y)
    for (index_t x = 0; x < gw; ++x) {
      std::fill(row.begin(), row.end(), 0.0);
      const auto& a = ty[static_cast<std::size_t>(y)];
      const auto& b = tx[static_cast<std::size_t>(x)];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const double wij = a.w[i] * b.w[j];
          const index_t src = 1 + clamp(a.base - 1 + i) * g0 + clamp(b.base - 1 + j);
          for (index_t e = 0; e < E; ++e) row[static_cast<std::size_t>(e)] += wij * static_cast<double>(pos(0, src, e));
        }
      for (index_t e = 0; e < E; ++e) out(0, 1 + y * gw + x, e) = static_cast<T>(row[static_cast<std::size_t>(e)]);
    }
}

// ---------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------

// Tokens per image of size H x W (patch P): 1 + (H / P) (W / P).
inline index_t vision_num_tokens(const vision_config& cfg, index_t height, index_t width) {
  return 1 + (height / cfg.patch_size) * (width / cfg.patch_size);
}

// Buffers of a forward, sized for one chunk of c images and reused by every chunk and layer (no
// activation is kept per layer: the encoder is frozen, nothing runs backward through it).
template <class T, memory_space S = host_space>
struct vision_state {
  index_t gh = 0, gw = 0, N = 0, c = 0;     // grid, tokens, images in the chunk the views are laid out for
  tensor_view<T, 2, S> patches;             // (c gh gw, K)  im2col, image-major
  tensor_view<T, 2, S> embedded;            // (c gh gw, E)  patch embeddings, image-major
  tensor_view<T, 2, S> x;                   // (N c, E)      the layers' input, sequence-major
  attention_block_state<T, S> attention;    // pre-LN attention sublayer (out: the residual stream)
  feed_forward_state<T, S> mlp;             // pre-LN MLP sublayer (out: the layer's output)
  kv_cache<T, S> cache;                     // one layer's keys and values
  block_scratch<T, S> scratch;              // unused: nothing is packed and nothing runs backward
  tensor_view<T, 3, S> pos;                 // (1, N, E)     position embeddings at this grid
  const void* pos_source = nullptr;         // the model parameter pos was made from (cache key with gh, gw)
  buffer<T, S> storage;
};

// One encoder layer (pre-LN), rows (N c, E) sequence-major: x -> st.mlp.out.
template <backend Be, class T, memory_space S>
void vision_layer_forward(Be& be, const vision_layer_weights<T, S>& L, vision_state<T, S>& st, const row_plan<S>& plan,
                          tensor_view<const T, 2, S> x, const vision_config& cfg) {
  attention_block_options ao;
  ao.num_heads = cfg.num_attention_heads;
  ao.norm = norm_placement::pre;
  ao.layer_norm_eps = cfg.layer_norm_eps;
  feed_forward_options fo;
  fo.norm = norm_placement::pre;
  fo.act = activation::gelu;
  fo.layer_norm_eps = cfg.layer_norm_eps;
  // x = x + projection(attention(LayerNorm1(x) W_q, W_k, W_v)), every token sees every token
  st.cache.len = 0;
  self_attention_forward(be, L.attention, st.attention, st.scratch, x, plan, st.cache, bidirectional{}, no_padding, ao);
  // x = x + fc2(gelu(fc1(LayerNorm2(x))))
  feed_forward_forward(be, L.mlp, st.mlp, 0, plan.rows(), detail::as_const(st.attention.out), fo);
}

// image_embeds (B, N, E) = the encoder applied to pixel_values (B, 3, H, W) (any strides; H and W
// multiples of patch_size); image_embeds must be contiguous. Images run `max_chunk` at a time.
template <backend Be, class T, memory_space S, class Px, class Out>
void vision_forward(Be& be, const vision_model<T, S>& m, vision_state<T, S>& st, Px&& pixel_values, Out&& image_embeds,
                    index_t max_chunk = 8) {
  constexpr std::string_view op = "vision_forward";
  const auto& cfg = m.config();
  auto px = detail::as_const(detail::arg_view<Be, 4>(pixel_values));  // (B, 3, H, W)
  auto out = detail::arg_view<Be, 3>(image_embeds);                   // (B, N, E)
  static_assert(std::is_same_v<typename decltype(px)::value_type, T> && std::is_same_v<typename decltype(out)::value_type, T>,
                "vision_forward: pixel_values and image_embeds must have the model's element type");
  const index_t B = px.extent(0), H = px.extent(2), W = px.extent(3), P = cfg.patch_size;
  const index_t E = cfg.hidden_size, F = cfg.intermediate_size, NH = cfg.num_attention_heads;
  BLIP2_CHECK(B >= 1 && px.extent(1) == vision_config::num_channels && H >= 1 && W >= 1, shape_error, op,
              ": pixel_values has shape ", shape_string(px), ", expected (B, 3, H, W) with B, H, W >= 1");
  BLIP2_CHECK(H % P == 0 && W % P == 0, shape_error, op, ": the image size ", H, " x ", W,
              " is not divisible by the patch size ", P, " (pixel_values has shape ", shape_string(px), ")");
  BLIP2_CHECK(max_chunk >= 1, value_error, op, ": max_chunk = ", max_chunk, " must be >= 1");
  const index_t gh = H / P, gw = W / P, G2 = gh * gw, N = 1 + G2, K = cfg.patch_dim();
  detail::check_shape(op, "image_embeds", out, {B, N, E});
  detail::check_contiguous(op, "image_embeds", out);
  const index_t c = std::min(B, max_chunk);

  // ---- buffers for a chunk of cb images (re-laid only when the shapes change; storage only grows) ----
  auto lay_out_chunk = [&](index_t cb) {
    lay_out(st.storage, [&](auto& a) {
      st.patches = a.template take<2>({cb * G2, K});
      st.embedded = a.template take<2>({cb * G2, E});
      st.x = a.template take<2>({N * cb, E});
      attention_block_layout(a, st.attention, norm_placement::pre, cb, N * cb, N * cb, N, N, E, NH);
      feed_forward_layout(a, st.mlp, norm_placement::pre, N * cb, E, F);
      st.cache.lay_out(a, cb, N, E, false);
      st.pos = a.template take<3>({1, N, E});
    });
    st.c = cb;
    st.pos_source = nullptr;  // storage may have moved: rebuild pos
  };
  auto build_pos = [&] {
    const auto pos0 = detail::as_const(m.w.position_embedding);  // (1, 1 + G0^2, E)
    if (gh == cfg.grid() && gw == cfg.grid()) {
      copy(be, st.pos, pos0);
    } else if constexpr (S::host_accessible) {
      interpolate_position_embedding(st.pos, pos0, gh, gw);
    } else {  // resized on the host (once per grid), from and to host copies
      host_tensor<T, 3> from({1, pos0.extent(1), E}), to({1, N, E});
      copy_to_host(be, from.view(), pos0);
      interpolate_position_embedding(to.view(), detail::as_const(from.view()), gh, gw);
      copy_from_host(be, st.pos, detail::as_const(to.view()));
    }
    st.gh = gh, st.gw = gw, st.N = N;
    st.pos_source = m.w.position_embedding.data();
  };

  const tensor_view<const T, 2, S> patch_w(m.w.patch_weight.data(), {E, K});  // (E, 3 P P): conv weight, flattened
  for (index_t b0 = 0; b0 < B; b0 += c) {
    const index_t cb = std::min(c, B - b0);  // images in this chunk
    if (!(st.c == cb && st.gh == gh && st.gw == gw && st.x.data())) lay_out_chunk(cb);
    if (!(st.pos_source == m.w.position_embedding.data() && st.gh == gh && st.gw == gw)) build_pos();
    const row_plan<S> plan(cb, N, N);  // every token of every image, no truncation

    // ---- patch embedding: im2col, then one linear map; then class token and position embeddings ----
    for (index_t i = 0; i < cb; ++i)
      for (index_t ch = 0; ch < vision_config::num_channels; ++ch) {
        // patch (py, px) of channel ch, pixel (ky, kx) -> patches(i G2 + py gw + px, ch P P + ky P + kx)
        const T* src = px.data() + (b0 + i) * px.stride(0) + ch * px.stride(1);
        const tensor_view<const T, 4, S> from(src, {gh, gw, P, P},
                                           {P * px.stride(2), P * px.stride(3), px.stride(2), px.stride(3)});
        const tensor_view<T, 4, S> to(st.patches.data() + i * G2 * K + ch * P * P, {gh, gw, P, P}, {gw * K, K, P, 1});
        copy(be, to, from);
      }
    linear_forward(be, st.embedded, st.patches, patch_w, m.w.patch_bias);  // (cb G2, E)
    // x(token 0, image i) = class_embedding; x(token 1 + p, image i) = embedded(i G2 + p); both + pos
    const auto xb = by_batch(st.x, cb);                                     // (cb, N, E)
    copy(be, tensor_view<T, 3, S>(xb.data(), {cb, 1, E}, xb.strides()),
         tensor_view<const T, 3, S>(m.w.class_embedding.data(), {cb, 1, E}, {0, E, 1}));
    copy(be, tensor_view<T, 3, S>(xb.data() + xb.stride(1), {cb, G2, E}, xb.strides()),
         tensor_view<const T, 3, S>(st.embedded.data(), {cb, G2, E}));
    const tensor_view<const T, 2, S> pos_rows(st.pos.data(), {N, E});         // (N, E)
    for (index_t i = 0; i < cb; ++i) axpy(be, slice(xb, i), pos_rows);     // + pos, image by image

    // ---- encoder layers ----
    tensor_view<const T, 2, S> x = detail::as_const(st.x);
    for (const auto& L : m.w.layers) {
      vision_layer_forward(be, L, st, plan, x, cfg);
      x = detail::as_const(st.mlp.out);
    }
    // image_embeds = post_layernorm(x), then from sequence-major into this chunk's (cb, N, E) block
    layer_norm_forward(be, st.x, layer_norm_cache<T, S>{st.mlp.in_mean, st.mlp.in_rstd}, x, m.w.post_norm.weight,
                       m.w.post_norm.bias, cfg.layer_norm_eps);
    copy(be, tensor_view<T, 3, S>(out.data() + b0 * N * E, {cb, N, E}), detail::as_const(by_batch(st.x, cb)));
  }
}

// The same, returning a new (B, N, E) host tensor. pixel_values is in the model's memory, or, for a
// device model, on the host (copied over first).
template <backend Be, class T, memory_space S, class Px>
host_tensor<T, 3> vision_forward(Be& be, const vision_model<T, S>& m, Px&& pixel_values, index_t max_chunk = 8) {
  const auto& cfg = m.config();
  if constexpr (S::host_accessible ||
                !std::is_same_v<typename view_t<Px>::memory_space_type, host_space>) {
    auto px = detail::as_const(detail::arg_view<Be, 4>(pixel_values));  // (B, 3, H, W)
    const index_t B = px.extent(0), N = vision_num_tokens(cfg, px.extent(2), px.extent(3)), E = cfg.hidden_size;
    vision_state<T, S> st;
    if constexpr (S::host_accessible) {
      host_tensor<T, 3> out({B, N, E});
      vision_forward(be, m, st, px, out.view(), max_chunk);
      return out;
    } else {
      space_tensor<T, 3, S> out({B, N, E});
      vision_forward(be, m, st, px, out.view(), max_chunk);
      return to_host(be, out.view());
    }
  } else {  // host pixels, device model: copy them over, then as above
    const auto px = to_backend_memory(be, detail::as_const(view(pixel_values)));
    return vision_forward(be, m, px.view(), max_chunk);
  }
}

}  // namespace blip2
