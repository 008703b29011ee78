// examples/support/synthetic_shapes.hpp: a synthetic image-caption world made on the fly, for training a small
// Q-Former from scratch and measuring zero-shot retrieval on attribute combinations it never saw.
//
// A scene is two different OBJECTS side by side (horizontal layout: first = left, second = right) or
// stacked (vertical layout: first = top, second = bottom). An object is (shape, colour, size):
//   shapes  square circle triangle cross [diamond]           config.num_shapes   (default 4 of 5)
//   colours red green blue yellow magenta cyan [orange white] config.num_colours  (default 6 of 8)
//   sizes   small large
// The caption names both objects and their relation, in either order (the "mention"):
//   [CLS] a small red circle left of a large blue square [SEP] [PAD]      first named first
//   [CLS] a large blue square right of a small red circle [SEP] [PAD]     second named first
// with "above" / "below" for the vertical layout. A caption determines its scene exactly (the semantic
// scene: layout and both objects); the image adds a little position jitter (and optional pixel noise).
//
// Vocabulary (fixed, word level, V = 25 whatever the config): [PAD] = 0, [CLS] = 1, [SEP] = 2, the 21
// words, and [DEC] = 24 last (BLIP-2 appends [DEC] at the end of BERT's vocabulary; ITG puts it in place
// of [CLS]). Captions are padded with [PAD] to config.text_len (T, default 12 = the longest caption).
//
// Held-out combinations: config.held_out lists (shape, colour) pairs; an object with such a pair is a
// held-out object, and a scene holding one is a held-out scene. Training draws only scenes without one,
// so the model never sees, e.g., a red circle (in any size, position or sentence); evaluation uses only
// held-out scenes. The default holds out {circle, square} x {red, blue}: 4 pairs, 8 of the 48 objects.
//   scenes (semantic)  2 layouts x 48 x 47 ordered pairs of different objects = 4512
//   train scenes       2 x 40 x 39 = 3120  (each with 2 mentions: 6240 captions)
//   held-out scenes    4512 - 3120 = 1392  (2784 captions; an evaluation set takes one per scene)
// Attribute-swapped distractors of a scene (same layout, same shapes):
//   position swap  the two objects exchange places   "a red circle left of a blue square" vs
//                                                    "a blue square left of a red circle"
//   colour swap    the two objects exchange colours  "... red circle ... blue square" vs "... blue circle
//                                                    ... red square"  (when the colours differ)
//   size swap      the two objects exchange sizes    (when the sizes differ)
// A position swap keeps a scene held-out; the default pairs form a rectangle so that colour swaps of
// many held-out scenes are held-out too (a red circle beside a blue square <-> a blue circle beside a
// red square). build_eval_set() adds a scene's held-out swap partners right after it, so most
// evaluation pairs have their distractors in the same set, and reports the counts.
//
// Determinism: everything random is counter-based Philox (core/rng.hpp): training example `index` of
// stream `seed` is a pure function of (config, seed, index), whatever the batch size, order or thread count.
// Images are (H, W, 3) float in [0, 1], row-major, black background, rendered with 4x4 supersampling.
//
// Demo support, not part of the installed library (namespace blip2::demo): examples/ is on the include
// path of the programs that use it, #include "support/synthetic_shapes.hpp".
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2::demo::synthetic {

// ---------------------------------------------------------------------------------------------------
// Attributes and vocabulary
// ---------------------------------------------------------------------------------------------------
inline constexpr std::array<std::string_view, 5> shape_names{"square", "circle", "triangle", "cross", "diamond"};
inline constexpr std::array<std::string_view, 8> colour_names{"red",     "green", "blue",   "yellow",
                                                              "magenta", "cyan",  "orange", "white"};
inline constexpr std::array<std::string_view, 2> size_names{"small", "large"};
// RGB of each colour, in [0, 1].
inline constexpr std::array<std::array<float, 3>, 8> colour_rgb{{{0.95f, 0.10f, 0.10f},
                                                                 {0.10f, 0.80f, 0.15f},
                                                                 {0.15f, 0.30f, 1.00f},
                                                                 {0.95f, 0.90f, 0.10f},
                                                                 {0.90f, 0.15f, 0.90f},
                                                                 {0.10f, 0.85f, 0.90f},
                                                                 {1.00f, 0.55f, 0.05f},
                                                                 {0.95f, 0.95f, 0.95f}}};

enum shape_id : int { square = 0, circle = 1, triangle = 2, cross = 3, diamond = 4 };
enum colour_id : int { red = 0, green = 1, blue = 2, yellow = 3, magenta = 4, cyan = 5, orange = 6, white = 7 };

// The vocabulary, by id. [PAD] = 0, [CLS] = 1, [SEP] = 2, words, [DEC] = V - 1.
inline constexpr std::array<std::string_view, 25> vocabulary{
    "[PAD]", "[CLS]", "[SEP]", "a",      "small",  "large", "left",  "right",   "of",
    "above", "below", "square", "circle", "triangle", "cross", "diamond", "red",  "green",
    "blue",  "yellow", "magenta", "cyan", "orange", "white", "[DEC]"};
inline constexpr std::int64_t vocab_size = static_cast<std::int64_t>(vocabulary.size());
inline constexpr std::int64_t pad_id = 0, cls_id = 1, sep_id = 2, dec_id = vocab_size - 1;
inline constexpr std::int64_t a_id = 3, small_id = 4, left_id = 6, right_id = 7, of_id = 8, above_id = 9,
                              below_id = 10, first_shape_id = 11, first_colour_id = 16;
// The longest caption: [CLS] a S C K left of a S C K [SEP].
inline constexpr std::int64_t max_caption_len = 12;

// The id of a word (value_error if it is not in the vocabulary).
inline std::int64_t token_id(std::string_view word) {
  for (std::size_t i = 0; i < vocabulary.size(); ++i)
    if (vocabulary[i] == word) return static_cast<std::int64_t>(i);
  ::blip2::detail::raise<value_error>("synthetic::token_id: '", word, "' is not in the vocabulary");
}

// ---------------------------------------------------------------------------------------------------
// Scenes
// ---------------------------------------------------------------------------------------------------
struct object {
  int shape = 0, colour = 0, size = 0;  // indices into shape_names, colour_names, size_names
  friend constexpr bool operator==(const object&, const object&) = default;
};

enum class layout : int { horizontal = 0, vertical = 1 };  // first = left / top, second = right / bottom

struct scene {
  layout arrangement = layout::horizontal;
  object first, second;  // first: left (horizontal) or top (vertical); always different objects
  friend constexpr bool operator==(const scene&, const scene&) = default;
};

// Which object the caption names first.
enum class mention : int { first_first = 0, second_first = 1 };

struct shapes_config {
  int image_size = 32;          // H = W
  int num_shapes = 4;           // the first num_shapes of shape_names (1..5)
  int num_colours = 6;          // the first num_colours of colour_names (2..8)
  float small_radius = 3.5f;    // half-extent of a small shape, pixels
  float large_radius = 6.0f;    // half-extent of a large shape, pixels
  float jitter = 1.0f;          // each centre moves by uniform [-jitter, jitter] in x and y
  float noise = 0.0f;           // uniform pixel noise in [-noise, noise] (clamped to [0, 1]); 0 = none
  std::int64_t text_len = max_caption_len;  // T: captions padded to this length (>= 12)
  // Hard negatives in the training stream: with this probability, odd example 2k+1 is a swap (position,
  // colour or size, drawn; a position swap when the drawn one is not a different train scene) of even
  // example 2k, so a batch holds attribute-swapped pairs as in-batch negatives. 0 = plain uniform draws.
  float swap_pairs = 0.0f;
  // (shape, colour) pairs never seen in training.
  std::vector<std::pair<int, int>> held_out{{circle, red}, {circle, blue}, {square, red}, {square, blue}};
};

// Counts of the world (see the header comment for the default numbers).
struct world_counts {
  std::int64_t objects = 0, held_out_objects = 0;
  std::int64_t scenes = 0, train_scenes = 0, held_out_scenes = 0;
};

namespace detail {
// SplitMix64 finaliser: decorrelates (seed, stream) into one Philox key.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// Streams of draws: a stream is a (seed, purpose) key; counter = index * 2^24 + slot.
enum stream : std::uint64_t { stream_pick = 1, stream_render = 2, stream_noise = 3, stream_eval = 4 };
inline float draw(std::uint64_t seed, std::uint64_t purpose, std::uint64_t index, std::uint64_t slot) {
  return uniform_float(mix64(seed ^ mix64(purpose)), (index << 24) + slot);
}
inline std::uint64_t draw_below(std::uint64_t seed, std::uint64_t purpose, std::uint64_t index,
                                std::uint64_t slot, std::uint64_t n) {
  const auto b = random_bits(mix64(seed ^ mix64(purpose)), (index << 24) + slot);
  const std::uint64_t x = (static_cast<std::uint64_t>(b[0]) << 32) | b[1];
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);  // unbiased enough: n << 2^64
}
}  // namespace detail

// The world: a config plus the enumerated train and held-out scenes.
class shapes_world {
 public:
  explicit shapes_world(shapes_config cfg = {}) : cfg_(std::move(cfg)) {
    BLIP2_CHECK(cfg_.num_shapes >= 1 && cfg_.num_shapes <= static_cast<int>(shape_names.size()), value_error,
                "shapes_config: num_shapes = ", cfg_.num_shapes, " must be in [1, ", shape_names.size(), "]");
    BLIP2_CHECK(cfg_.num_colours >= 2 && cfg_.num_colours <= static_cast<int>(colour_names.size()), value_error,
                "shapes_config: num_colours = ", cfg_.num_colours, " must be in [2, ", colour_names.size(), "]");
    BLIP2_CHECK(cfg_.image_size >= 8, value_error, "shapes_config: image_size = ", cfg_.image_size, " < 8");
    BLIP2_CHECK(cfg_.small_radius > 0 && cfg_.large_radius > cfg_.small_radius, value_error,
                "shapes_config: need 0 < small_radius < large_radius");
    BLIP2_CHECK(cfg_.large_radius + cfg_.jitter <= cfg_.image_size / 4.0f + 0.5f, value_error,
                "shapes_config: large_radius + jitter = ", cfg_.large_radius + cfg_.jitter,
                " exceeds a quarter of the image (", cfg_.image_size / 4.0f, "): the shapes could overlap");
    BLIP2_CHECK(cfg_.text_len >= max_caption_len, value_error, "shapes_config: text_len = ", cfg_.text_len,
                " is shorter than the longest caption (", max_caption_len, ")");
    BLIP2_CHECK(cfg_.jitter >= 0 && cfg_.noise >= 0, value_error, "shapes_config: negative jitter or noise");
    BLIP2_CHECK(cfg_.swap_pairs >= 0 && cfg_.swap_pairs <= 1, value_error, "shapes_config: swap_pairs = ",
                cfg_.swap_pairs, " must be in [0, 1]");
    for (auto [s, c] : cfg_.held_out)
      BLIP2_CHECK(s >= 0 && s < cfg_.num_shapes && c >= 0 && c < cfg_.num_colours, value_error,
                  "shapes_config: held-out pair (", s, ", ", c, ") is outside the ", cfg_.num_shapes, " shapes x ",
                  cfg_.num_colours, " colours");
    const int O = num_objects();
    for (int l = 0; l < 2; ++l)
      for (int a = 0; a < O; ++a)
        for (int b = 0; b < O; ++b) {
          if (a == b) continue;
          const scene s{static_cast<layout>(l), object_at(a), object_at(b)};
          (is_held_out(s) ? held_out_ : train_).push_back(s);
        }
  }

  const shapes_config& config() const { return cfg_; }
  int num_objects() const { return cfg_.num_shapes * cfg_.num_colours * 2; }
  std::int64_t num_tokens() const { return cfg_.text_len; }

  // Objects by index: ((shape * num_colours) + colour) * 2 + size.
  object object_at(int i) const { return {i / (2 * cfg_.num_colours), (i / 2) % cfg_.num_colours, i % 2}; }
  int object_index(const object& o) const { return (o.shape * cfg_.num_colours + o.colour) * 2 + o.size; }
  // Scenes by index: (layout * O + first) * O + second (indices with first == second are not scenes).
  std::int64_t scene_index(const scene& s) const {
    const std::int64_t O = num_objects();
    return (static_cast<std::int64_t>(s.arrangement) * O + object_index(s.first)) * O + object_index(s.second);
  }

  bool is_held_out(const object& o) const {
    for (auto [s, c] : cfg_.held_out)
      if (o.shape == s && o.colour == c) return true;
    return false;
  }
  bool is_held_out(const scene& s) const { return is_held_out(s.first) || is_held_out(s.second); }

  std::span<const scene> train_scenes() const { return train_; }
  std::span<const scene> held_out_scenes() const { return held_out_; }
  world_counts counts() const {
    world_counts c;
    c.objects = num_objects();
    for (int i = 0; i < num_objects(); ++i) c.held_out_objects += is_held_out(object_at(i));
    c.scenes = static_cast<std::int64_t>(train_.size() + held_out_.size());
    c.train_scenes = static_cast<std::int64_t>(train_.size());
    c.held_out_scenes = static_cast<std::int64_t>(held_out_.size());
    return c;
  }

  // ---- captions ----
  // Word ids of the caption (without padding): [CLS] a S C K rel.. a S C K [SEP].
  std::vector<std::int64_t> caption_tokens(const scene& s, mention m) const {
    const bool ff = m == mention::first_first;
    const object& x = ff ? s.first : s.second;
    const object& y = ff ? s.second : s.first;
    std::vector<std::int64_t> t{cls_id};
    auto phrase = [&](const object& o) {
      t.push_back(a_id);
      t.push_back(small_id + o.size);
      t.push_back(first_colour_id + o.colour);
      t.push_back(first_shape_id + o.shape);
    };
    phrase(x);
    if (s.arrangement == layout::horizontal) {
      t.push_back(ff ? left_id : right_id);
      t.push_back(of_id);
    } else {
      t.push_back(ff ? above_id : below_id);
    }
    phrase(y);
    t.push_back(sep_id);
    return t;
  }
  // The caption as ids and attention mask, padded to T: ids (T) and mask (T) int64.
  void caption(const scene& s, mention m, tensor_view<std::int64_t, 1> ids, tensor_view<std::int64_t, 1> mask) const {
    const std::int64_t T = cfg_.text_len;
    BLIP2_CHECK(ids.extent(0) == T && mask.extent(0) == T, shape_error, "synthetic::caption: ids ",
                shape_string(ids), " and mask ", shape_string(mask), " must both be (", T, ")");
    const auto t = caption_tokens(s, m);
    for (std::int64_t k = 0; k < T; ++k) {
      const bool real = k < static_cast<std::int64_t>(t.size());
      ids(k) = real ? t[static_cast<std::size_t>(k)] : pad_id;
      mask(k) = real ? 1 : 0;
    }
  }
  // The caption's words without [CLS] / [SEP], e.g. "a small red circle left of a large blue square".
  std::string caption_text(const scene& s, mention m) const { return decode(caption_tokens(s, m)); }

  // ---- images ----
  // Renders scene s into img (H, W, 3): centres jittered and noise drawn from (seed, index).
  void render(const scene& s, std::uint64_t seed, std::uint64_t index, tensor_view<float, 3> img) const {
    const int S = cfg_.image_size;
    BLIP2_CHECK(img.extent(0) == S && img.extent(1) == S && img.extent(2) == 3, shape_error,
                "synthetic::render: image ", shape_string(img), " must be (", S, ", ", S, ", 3)");
    for (index_t y = 0; y < S; ++y)
      for (index_t x = 0; x < S; ++x)
        for (index_t ch = 0; ch < 3; ++ch) img(y, x, ch) = 0.0f;
    const float q = S / 4.0f, h = S / 2.0f;
    const bool hz = s.arrangement == layout::horizontal;
    const std::array<std::pair<float, float>, 2> centre{{{hz ? q : h, hz ? h : q}, {hz ? 3 * q : h, hz ? h : 3 * q}}};
    const std::array<const object*, 2> objs{&s.first, &s.second};
    for (int k = 0; k < 2; ++k) {
      const float jx = cfg_.jitter * (2.0f * detail::draw(seed, detail::stream_render, index, 2 * k) - 1.0f);
      const float jy = cfg_.jitter * (2.0f * detail::draw(seed, detail::stream_render, index, 2 * k + 1) - 1.0f);
      draw_object(*objs[k], centre[k].first + jx, centre[k].second + jy, img);
    }
    if (cfg_.noise > 0) {
      std::uint64_t slot = 0;
      for (index_t y = 0; y < S; ++y)
        for (index_t x = 0; x < S; ++x)
          for (index_t ch = 0; ch < 3; ++ch) {
            const float n = cfg_.noise * (2.0f * detail::draw(seed, detail::stream_noise, index, slot++) - 1.0f);
            img(y, x, ch) = std::clamp(img(y, x, ch) + n, 0.0f, 1.0f);
          }
    }
  }
  host_tensor<float, 3> render(const scene& s, std::uint64_t seed, std::uint64_t index) const {
    host_tensor<float, 3> img({cfg_.image_size, cfg_.image_size, 3});
    render(s, seed, index, img.view());
    return img;
  }

  // ---- the training stream ----
  // Example `index` of stream `seed`: a train scene drawn uniformly, a mention drawn uniformly; with
  // config.swap_pairs > 0 an odd index may instead take a swap of the previous index's scene.
  std::pair<scene, mention> train_pick(std::uint64_t seed, std::uint64_t index) const {
    const auto m = static_cast<mention>(detail::draw_below(seed, detail::stream_pick, index, 1, 2));
    if (cfg_.swap_pairs > 0 && (index & 1) &&
        detail::draw(seed, detail::stream_pick, index, 2) < cfg_.swap_pairs) {
      const scene p = uniform_scene(seed, index - 1);
      const auto kind = detail::draw_below(seed, detail::stream_pick, index, 3, 3);
      const scene t = kind == 0 ? position_swap(p) : kind == 1 ? colour_swap(p) : size_swap(p);
      return {t != p && !is_held_out(t) ? t : position_swap(p), m};
    }
    return {uniform_scene(seed, index), m};
  }

  // Fills a batch with training examples first_index .. first_index + B - 1 of stream seed:
  // images (B, H, W, 3), ids (B, T), mask (B, T); scenes_out (B) receives the scenes if not empty.
  // Parallel over the batch with OpenMP; the result does not depend on the thread count.
  void train_batch(std::uint64_t seed, std::uint64_t first_index, tensor_view<float, 4> images,
                   tensor_view<std::int64_t, 2> ids, tensor_view<std::int64_t, 2> mask,
                   std::span<scene> scenes_out = {}) const {
    const index_t B = images.extent(0);
    check_batch("synthetic::train_batch", B, images, ids, mask);
    BLIP2_CHECK(scenes_out.empty() || static_cast<index_t>(scenes_out.size()) == B, shape_error,
                "synthetic::train_batch: scenes_out has ", scenes_out.size(), " entries for a batch of ", B);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (index_t b = 0; b < B; ++b) {
      const auto idx = first_index + static_cast<std::uint64_t>(b);
      const auto [s, m] = train_pick(seed, idx);
      render(s, seed, idx, slice(images, b));
      caption(s, m, row(ids, b), row(mask, b));
      if (!scenes_out.empty()) scenes_out[static_cast<std::size_t>(b)] = s;
    }
  }

  // ---- swaps (distractors) ----
  static scene position_swap(const scene& s) { return {s.arrangement, s.second, s.first}; }
  static scene colour_swap(const scene& s) {
    scene r = s;
    std::swap(r.first.colour, r.second.colour);
    return r;
  }
  static scene size_swap(const scene& s) {
    scene r = s;
    std::swap(r.first.size, r.second.size);
    return r;
  }

  // Decodes ids to words separated by spaces, stopping at [SEP] or [PAD], skipping [CLS] and [DEC].
  static std::string decode(std::span<const std::int64_t> ids) {
    std::string out;
    for (std::int64_t id : ids) {
      if (id == sep_id || id == pad_id) break;
      if (id == cls_id || id == dec_id) continue;
      if (!out.empty()) out += ' ';
      out += (id >= 0 && id < vocab_size) ? std::string(vocabulary[static_cast<std::size_t>(id)]) : "[?]";
    }
    return out;
  }

 private:
  static tensor_view<float, 3> slice(tensor_view<float, 4> v, index_t b) {
    return {v.data() + b * v.stride(0), {v.extent(1), v.extent(2), v.extent(3)}, {v.stride(1), v.stride(2), v.stride(3)}};
  }
  static tensor_view<std::int64_t, 1> row(tensor_view<std::int64_t, 2> v, index_t b) {
    return {v.data() + b * v.stride(0), {v.extent(1)}, {v.stride(1)}};
  }
  void check_batch(const char* op, index_t B, tensor_view<float, 4> images, tensor_view<std::int64_t, 2> ids,
                   tensor_view<std::int64_t, 2> mask) const {
    const int S = cfg_.image_size;
    const std::int64_t T = cfg_.text_len;
    BLIP2_CHECK(images.extent(1) == S && images.extent(2) == S && images.extent(3) == 3, shape_error, op,
                ": images ", shape_string(images), " must be (B, ", S, ", ", S, ", 3)");
    BLIP2_CHECK(ids.extents() == (extents_t<2>{B, T}) && mask.extents() == (extents_t<2>{B, T}), shape_error, op,
                ": ids ", shape_string(ids), " and mask ", shape_string(mask), " must be (", B, ", ", T, ")");
  }

  // Coverage of pixel (x, y) by an object of half-extent r centred at (cx, cy), 4x4 supersampled.
  static bool inside(int shape, float dx, float dy, float r) {
    switch (shape) {
      case square: return std::fabs(dx) <= 0.85f * r && std::fabs(dy) <= 0.85f * r;
      case circle: return dx * dx + dy * dy <= r * r;
      case triangle: return dy >= -r && dy <= r && std::fabs(dx) <= 0.5f * (dy + r);  // apex up (y grows down)
      case cross: {
        const float w = 0.33f * r;
        return (std::fabs(dx) <= w && std::fabs(dy) <= r) || (std::fabs(dy) <= w && std::fabs(dx) <= r);
      }
      default: return std::fabs(dx) + std::fabs(dy) <= r;  // diamond
    }
  }
  void draw_object(const object& o, float cx, float cy, tensor_view<float, 3> img) const {
    const int S = cfg_.image_size;
    const float r = o.size == 0 ? cfg_.small_radius : cfg_.large_radius;
    const auto& rgb = colour_rgb[static_cast<std::size_t>(o.colour)];
    const int y0 = std::max(0, static_cast<int>(std::floor(cy - r)) - 1);
    const int y1 = std::min(S - 1, static_cast<int>(std::ceil(cy + r)) + 1);
    const int x0 = std::max(0, static_cast<int>(std::floor(cx - r)) - 1);
    const int x1 = std::min(S - 1, static_cast<int>(std::ceil(cx + r)) + 1);
    constexpr int ss = 4;
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) {
        int hits = 0;
        for (int sy = 0; sy < ss; ++sy)
          for (int sx = 0; sx < ss; ++sx) {
            const float px = static_cast<float>(x) + (static_cast<float>(sx) + 0.5f) / ss;
            const float py = static_cast<float>(y) + (static_cast<float>(sy) + 0.5f) / ss;
            hits += inside(o.shape, px - cx, py - cy, r);
          }
        if (hits == 0) continue;
        const float a = static_cast<float>(hits) / (ss * ss);
        for (int ch = 0; ch < 3; ++ch) img(y, x, ch) = img(y, x, ch) * (1 - a) + rgb[static_cast<std::size_t>(ch)] * a;
      }
  }

  scene uniform_scene(std::uint64_t seed, std::uint64_t index) const {
    return train_[static_cast<std::size_t>(detail::draw_below(seed, detail::stream_pick, index, 0, train_.size()))];
  }

  shapes_config cfg_;
  std::vector<scene> train_, held_out_;
};

// ---------------------------------------------------------------------------------------------------
// The evaluation set: held-out scenes with unique captions, their distractors included
// ---------------------------------------------------------------------------------------------------
struct eval_set {
  std::vector<scene> scenes;      // (N) pair k = (image of scenes[k], caption of (scenes[k], mentions[k]))
  std::vector<mention> mentions;  // (N)
  std::uint64_t render_seed = 0;  // images: world.render(scenes[k], render_seed, k)
  // Distractor counts: unordered pairs {s, swap(s)} with both scenes in the set, by kind (a pair of
  // objects that differ only in colour is both a colour swap and a position swap of each other).
  std::int64_t position_swap_pairs = 0, colour_swap_pairs = 0, size_swap_pairs = 0;
  std::int64_t scenes_with_distractor = 0;  // scenes with at least one swap partner in the set
  std::int64_t held_out_space = 0;          // held-out scenes available
  std::int64_t size() const { return static_cast<std::int64_t>(scenes.size()); }
};

// N held-out scenes (all different, so all captions differ) in a seeded order; after each scene its
// held-out position, colour and size swaps are added (when different and not yet in), until N.
// The mention of each caption is drawn from the seed. Throws value_error if N exceeds the held-out space.
inline eval_set build_eval_set(const shapes_world& world, std::int64_t n, std::uint64_t seed) {
  const auto pool = world.held_out_scenes();
  BLIP2_CHECK(n >= 1 && n <= static_cast<std::int64_t>(pool.size()), value_error, "synthetic::build_eval_set: ",
              n, " pairs requested but the held-out space has ", pool.size(), " scenes (captions unique)");
  // Seeded Fisher-Yates shuffle of the pool.
  std::vector<scene> order(pool.begin(), pool.end());
  for (std::size_t i = order.size(); i-- > 1;)
    std::swap(order[i], order[detail::draw_below(seed, detail::stream_eval, 0, i, i + 1)]);
  eval_set e;
  e.held_out_space = static_cast<std::int64_t>(pool.size());
  e.render_seed = detail::mix64(seed ^ 0xE7A1u);
  std::unordered_set<std::int64_t> in;
  auto add = [&](const scene& s) {
    if (static_cast<std::int64_t>(e.scenes.size()) >= n) return;
    if (!world.is_held_out(s) || s.first == s.second || !in.insert(world.scene_index(s)).second) return;
    e.scenes.push_back(s);
  };
  for (const scene& s : order) {
    if (static_cast<std::int64_t>(e.scenes.size()) >= n) break;
    if (in.count(world.scene_index(s))) continue;
    add(s);
    add(shapes_world::position_swap(s));
    add(shapes_world::colour_swap(s));
    add(shapes_world::size_swap(s));
  }
  for (std::size_t k = 0; k < e.scenes.size(); ++k)
    e.mentions.push_back(static_cast<mention>(detail::draw_below(seed, detail::stream_eval, 1, k, 2)));
  // Counts.
  for (const scene& s : e.scenes) {
    bool any = false;
    auto partner = [&](const scene& t, std::int64_t& count) {
      if (t == s || !in.count(world.scene_index(t))) return;
      any = true;
      if (world.scene_index(s) < world.scene_index(t)) ++count;  // each unordered pair once
    };
    partner(shapes_world::position_swap(s), e.position_swap_pairs);
    partner(shapes_world::colour_swap(s), e.colour_swap_pairs);
    partner(shapes_world::size_swap(s), e.size_swap_pairs);
    e.scenes_with_distractor += any;
  }
  return e;
}

// Renders the evaluation set: images (N, H, W, 3), ids (N, T), mask (N, T).
inline void render_eval_set(const shapes_world& world, const eval_set& e, tensor_view<float, 4> images,
                            tensor_view<std::int64_t, 2> ids, tensor_view<std::int64_t, 2> mask) {
  const index_t N = e.size(), S = world.config().image_size, T = world.config().text_len;
  BLIP2_CHECK(images.extents() == (extents_t<4>{N, S, S, 3}), shape_error, "synthetic::render_eval_set: images ",
              shape_string(images), " must be (", N, ", ", S, ", ", S, ", 3)");
  BLIP2_CHECK(ids.extents() == (extents_t<2>{N, T}) && mask.extents() == (extents_t<2>{N, T}), shape_error,
              "synthetic::render_eval_set: ids ", shape_string(ids), " and mask ", shape_string(mask), " must be (",
              N, ", ", T, ")");
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (index_t k = 0; k < N; ++k) {
    const auto ku = static_cast<std::size_t>(k);
    world.render(e.scenes[ku], e.render_seed, static_cast<std::uint64_t>(k),
                 tensor_view<float, 3>(images.data() + k * images.stride(0), {S, S, 3},
                                       {images.stride(1), images.stride(2), images.stride(3)}));
    world.caption(e.scenes[ku], e.mentions[ku], tensor_view<std::int64_t, 1>(ids.data() + k * ids.stride(0), {T}, {ids.stride(1)}),
                  tensor_view<std::int64_t, 1>(mask.data() + k * mask.stride(0), {T}, {mask.stride(1)}));
  }
}

}  // namespace blip2::demo::synthetic
