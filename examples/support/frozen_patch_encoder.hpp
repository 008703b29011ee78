// examples/support/frozen_patch_encoder.hpp: a frozen image encoder made of fixed random patch features, the
// stand-in for EVA ViT-g when a small Q-Former is trained from scratch on synthetic scenes.
//
// Dimensions: B images, H = W = image_size, Cin channels, p patch size, P = H / p patches a side,
//             E output width, N = P^2 (+ 1 with the global token) tokens. Defaults: 32x32 RGB, p = 8,
//             so N = 16 tokens of E = 128.
//
// Token n (patch n, row-major over the P x P grid), for each input group g (see patch_features):
//   u_g   = the group's input computed from the patch's pixels
//             pixels:      the raw patch, (y, x, channel) row-major                   (p p Cin) -> E dims
//             form_colour: form   f_i = max_c x_(i,c) per pixel                       (p p)     -> E/2 dims
//                          colour q_c = sum_i x_(i,c) / sum_i f_i (0 if the patch is empty) (Cin) -> E - E/2
//   h_g   = u_g W_g + b_g + pos_(n, g's dims)   W_g ~ N(0, gain^2 / fan_in), b_g ~ N(0, bias_scale^2),
//                                               pos (P^2, E) ~ N(0, position_scale^2): fixed, from the seed
//   a_g   = act(h_g)                            none, relu, gelu (erf) or tanh
//   out   = [LayerNorm(a_g) for each g]         eps 1e-5, no affine, per group (when layer_norm)
//   global token (optional, first): the same LayerNorm of the mean over n of a.
// out is (B, N, E) float: a pure function of the image (no state, no randomness after construction), so
// a training loop may compute each image's features once and cache them. Colour (which channels),
// shape (which pixels of a patch) and position (which patch, plus pos_n) stay recoverable: on the
// default synthetic world a ridge probe on the flattened features of 3000 training images reads the
// layout, both objects' colours, sizes and shapes on 1000 held-out-combination images at 99.9-100%
// (shape falls to 82-84% with the pixels mode, where colour and form are entangled); the test suite
// checks that scenes differing only in one colour differ exactly in the tokens of that object.
// Weights are drawn with Philox from (seed, element index): the same seed gives the same encoder on
// every machine and thread count. encode() is parallel over the images with OpenMP.
//
// Demo support, not part of the installed library (namespace blip2::demo): examples/ is on the include
// path of the programs that use it, #include "support/frozen_patch_encoder.hpp".
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2::demo {

enum class patch_activation { none, relu, gelu, tanh };

// What a token is computed from.
//   pixels       one group: the raw patch (K values) -> E
//   form_colour  two groups, concatenated: the form, i.e. the per-pixel maximum over channels (p p values)
//                -> E/2 dims, and the chromaticity, i.e. the per-channel sums over the pixels divided by the
//                sum of the form (Cin values; 0 for an empty patch) -> E - E/2 dims. Like a pretrained
//                encoder, it keeps what a shape looks like apart from what colour it has, so a model can
//                recognise an unseen (shape, colour) combination from parts it has seen.
enum class patch_features { pixels, form_colour };

struct patch_encoder_config {
  index_t image_size = 32;   // H = W
  index_t channels = 3;      // Cin
  index_t patch = 8;         // p: P = image_size / patch patches a side
  index_t dim = 128;         // E
  patch_features features = patch_features::form_colour;
  patch_activation activation = patch_activation::gelu;
  bool layer_norm = true;     // per group
  bool global_token = false;  // prepend the LayerNorm of the mean token (N = P^2 + 1)
  float gain = 2.0f;          // W ~ N(0, gain^2 / fan_in)
  float bias_scale = 0.5f;    // b ~ N(0, bias_scale^2)
  float position_scale = 1.0f;  // pos ~ N(0, position_scale^2)
  std::uint64_t seed = 0xB11D2F0A7E5ull;
};

class frozen_patch_encoder {
 public:
  explicit frozen_patch_encoder(const patch_encoder_config& cfg = {}) : cfg_(cfg) {
    BLIP2_CHECK(cfg.patch >= 1 && cfg.image_size >= cfg.patch && cfg.image_size % cfg.patch == 0, value_error,
                "frozen_patch_encoder: image_size ", cfg.image_size, " must be a multiple of patch ", cfg.patch);
    BLIP2_CHECK(cfg.channels >= 1 && cfg.dim >= 2, value_error, "frozen_patch_encoder: channels = ", cfg.channels,
                ", dim = ", cfg.dim, " (need channels >= 1, dim >= 2)");
    grid_ = cfg.image_size / cfg.patch;
    const index_t E = cfg.dim, NP = grid_ * grid_, pp = cfg.patch * cfg.patch;
    if (cfg.features == patch_features::pixels) {
      groups_.push_back({pp * cfg.channels, 0, E, {}, {}});
    } else {
      groups_.push_back({pp, 0, E / 2, {}, {}});
      groups_.push_back({cfg.channels, E / 2, E - E / 2, {}, {}});
    }
    std::uint64_t counter = 0;
    for (auto& g : groups_) {
      const float wstd = cfg.gain / std::sqrt(static_cast<float>(g.in));
      g.weight.resize(static_cast<std::size_t>(g.in * g.out));
      g.bias.resize(static_cast<std::size_t>(g.out));
      for (auto& w : g.weight) w = wstd * normal(counter++);
      for (auto& b : g.bias) b = cfg.bias_scale * normal(counter++);
    }
    pos_.resize(static_cast<std::size_t>(NP * E));
    for (auto& p : pos_) p = cfg.position_scale * normal(counter++);
  }

  const patch_encoder_config& config() const { return cfg_; }
  index_t num_patches() const { return grid_ * grid_; }
  index_t num_tokens() const { return num_patches() + (cfg_.global_token ? 1 : 0); }  // N
  index_t dim() const { return cfg_.dim; }                                            // E

  // images (B, H, W, Cin) -> out (B, N, E). Assigns out.
  void encode(tensor_view<const float, 4> images, tensor_view<float, 3> out) const {
    const index_t B = images.extent(0), S = cfg_.image_size, C = cfg_.channels, E = cfg_.dim, N = num_tokens();
    BLIP2_CHECK(images.extent(1) == S && images.extent(2) == S && images.extent(3) == C, shape_error,
                "frozen_patch_encoder::encode: images ", shape_string(images), " must be (B, ", S, ", ", S, ", ", C, ")");
    BLIP2_CHECK(out.extents() == (extents_t<3>{B, N, E}), shape_error, "frozen_patch_encoder::encode: out ",
                shape_string(out), " must be (", B, ", ", N, ", ", E, ")");
    const index_t NP = num_patches(), off = cfg_.global_token ? 1 : 0;
#if defined(_OPENMP)
#pragma omp parallel
#endif
    {
      std::vector<float> x(static_cast<std::size_t>(cfg_.patch * cfg_.patch * C)), a(static_cast<std::size_t>(E)),
          mean(static_cast<std::size_t>(E));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (index_t b = 0; b < B; ++b) {
        std::fill(mean.begin(), mean.end(), 0.0f);
        for (index_t n = 0; n < NP; ++n) {
          gather(images, b, n, x.data());
          activated(x.data(), n, a.data());
          for (index_t e = 0; e < E; ++e) mean[static_cast<std::size_t>(e)] += a[static_cast<std::size_t>(e)] / NP;
          if (cfg_.layer_norm) normalize(a.data());
          for (index_t e = 0; e < E; ++e) out(b, n + off, e) = a[static_cast<std::size_t>(e)];
        }
        if (!cfg_.global_token) continue;
        if (cfg_.layer_norm) normalize(mean.data());
        for (index_t e = 0; e < E; ++e) out(b, 0, e) = mean[static_cast<std::size_t>(e)];
      }
    }
  }
  host_tensor<float, 3> encode(const host_tensor<float, 4>& images) const {
    host_tensor<float, 3> out({images.extent(0), num_tokens(), dim()});
    encode(images.view(), out.view());
    return out;
  }

 private:
  struct group {
    index_t in, offset, out;         // input values, first output dim, output dims
    std::vector<float> weight, bias;  // (in, out), (out)
  };

  // A standard normal from two counters (Box-Muller).
  float normal(std::uint64_t i) const {
    const double u1 = uniform_double(cfg_.seed, 2 * i), u2 = uniform_double(cfg_.seed, 2 * i + 1);
    return static_cast<float>(std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2));
  }
  // The pixels of patch n of image b, row-major (y, x, channel).
  void gather(const tensor_view<const float, 4>& images, index_t b, index_t n, float* x) const {
    const index_t p = cfg_.patch, C = cfg_.channels, py = n / grid_, px = n % grid_;
    index_t k = 0;
    for (index_t y = 0; y < p; ++y)
      for (index_t xx = 0; xx < p; ++xx)
        for (index_t c = 0; c < C; ++c) x[k++] = images(b, py * p + y, px * p + xx, c);
  }
  // a = act(input_g W_g + b_g + pos_n) for every group g   (E)
  void activated(const float* x, index_t n, float* a) const {
    const index_t E = cfg_.dim, C = cfg_.channels, pp = cfg_.patch * cfg_.patch;
    float form[1024], chroma[64];  // form_colour inputs (p p <= 1024, Cin <= 64 checked below)
    const float* inputs[2] = {x, nullptr};
    if (cfg_.features == patch_features::form_colour) {
      BLIP2_CHECK(pp <= 1024 && C <= 64, value_error, "frozen_patch_encoder: form_colour needs patch^2 <= 1024, channels <= 64");
      float total = 0.0f;
      for (index_t c = 0; c < C; ++c) chroma[c] = 0.0f;
      for (index_t i = 0; i < pp; ++i) {
        float m = 0.0f;
        for (index_t c = 0; c < C; ++c) {
          m = std::max(m, x[i * C + c]);
          chroma[c] += x[i * C + c];
        }
        form[i] = m;
        total += m;
      }
      for (index_t c = 0; c < C; ++c) chroma[c] = total > 1e-6f ? chroma[c] / total : 0.0f;
      inputs[0] = form;
      inputs[1] = chroma;
    }
    for (index_t e = 0; e < E; ++e) a[e] = pos_[static_cast<std::size_t>(n * E + e)];
    for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
      const group& g = groups_[gi];
      float* ag = a + g.offset;
      for (index_t e = 0; e < g.out; ++e) ag[e] += g.bias[static_cast<std::size_t>(e)];
      for (index_t k = 0; k < g.in; ++k) {
        const float xk = inputs[gi][k];
        if (xk == 0.0f) continue;  // background
        const float* w = g.weight.data() + k * g.out;
        for (index_t e = 0; e < g.out; ++e) ag[e] += xk * w[e];
      }
    }
    for (index_t e = 0; e < E; ++e) {
      const float h = a[e];
      switch (cfg_.activation) {
        case patch_activation::none: break;
        case patch_activation::relu: a[e] = h > 0 ? h : 0.0f; break;
        case patch_activation::gelu: a[e] = 0.5f * h * (1.0f + std::erf(h * 0.70710678118654752f)); break;
        case patch_activation::tanh: a[e] = std::tanh(h); break;
      }
    }
  }
  // LayerNorm (eps 1e-5, no affine) over each group's dims.
  void normalize(float* a) const {
    for (const group& g : groups_) {
      float* v = a + g.offset;
      double mean = 0, var = 0;
      for (index_t e = 0; e < g.out; ++e) mean += v[e];
      mean /= static_cast<double>(g.out);
      for (index_t e = 0; e < g.out; ++e) var += (v[e] - mean) * (v[e] - mean);
      var /= static_cast<double>(g.out);
      const double rstd = 1.0 / std::sqrt(var + 1e-5);
      for (index_t e = 0; e < g.out; ++e) v[e] = static_cast<float>((v[e] - mean) * rstd);
    }
  }

  patch_encoder_config cfg_;
  index_t grid_ = 0;
  std::vector<group> groups_;
  std::vector<float> pos_;  // (P^2, E)
};

}  // namespace blip2::demo
