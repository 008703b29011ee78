// tests/harness/stage1_batch.hpp: a stage-1 batch held in vectors (the test owns the memory), and a
// synthetic one for the stage1_padded fixture's shapes drawn from the counter-based RNG.
#pragma once
#include <cstdint>
#include <vector>

#include "blip2/core/rng.hpp"
#include "blip2/train/stage1_step.hpp"

namespace blip2::testing {

template <class F>
struct stage1_batch_data {
  index_t B = 0, N = 5, E = 20, T = 6;
  std::vector<F> image;                            // (B, N, E)
  std::vector<index_t> ids, mask, image_ids;       // (B, T), (B, T) or empty, (B) or empty
  stage1_batch<F> view() const {
    stage1_batch<F> b;
    b.image_embeds = tensor_view<const F, 3>(image.data(), {B, N, E});
    b.input_ids = tensor_view<const index_t, 2>(ids.data(), {B, T});
    if (!mask.empty()) b.attention_mask = tensor_view<const index_t, 2>(mask.data(), {B, T});
    if (!image_ids.empty()) b.image_ids = tensor_view<const index_t, 1>(image_ids.data(), {B});
    return b;
  }
  // pairs [a, a + n)
  stage1_batch_data rows(index_t a, index_t n) const {
    stage1_batch_data o = *this;
    o.B = n;
    auto cut = [&](const auto& v, index_t per) {
      using V = std::decay_t<decltype(v)>;
      return v.empty() ? V{} : V(v.begin() + a * per, v.begin() + (a + n) * per);
    };
    o.image = cut(image, N * E), o.ids = cut(ids, T), o.mask = cut(mask, T), o.image_ids = cut(image_ids, 1);
    return o;
  }
  stage1_batch_data first(index_t n) const { return rows(0, n); }
  // rank r's contiguous shard of W: pairs [r B / W, (r + 1) B / W)
  stage1_batch_data shard(int r, int W) const { return rows(r * (B / W), B / W); }
};

// B pairs for the stage1_padded model (N = 5, E = 20, T = 6, vocabulary 37) from the counter-based RNG:
// images uniform in [-1, 1), captions [CLS] = 1 then ids in [3, 37), padded after 2 + (b + seed) % 5 tokens
// (so shards of a batch count different numbers of tokens).
inline stage1_batch_data<float> synthetic_stage1_batch(index_t B, std::uint64_t seed) {
  stage1_batch_data<float> s;
  s.B = B;
  s.image.resize(static_cast<std::size_t>(B * s.N * s.E));
  for (std::size_t k = 0; k < s.image.size(); ++k) s.image[k] = static_cast<float>(2 * uniform_double(seed, k) - 1);
  s.ids.assign(static_cast<std::size_t>(B * s.T), 0);
  s.mask.assign(static_cast<std::size_t>(B * s.T), 0);
  for (index_t b = 0; b < B; ++b) {
    const index_t len = 2 + static_cast<index_t>((static_cast<std::uint64_t>(b) + seed) % 5);
    for (index_t t = 0; t < len; ++t) {
      const auto k = static_cast<std::size_t>(b * s.T + t);
      s.ids[k] = t == 0 ? 1 : 3 + static_cast<index_t>(34 * uniform_double(seed ^ 0x9e3779b97f4a7c15ull, k));
      s.mask[k] = 1;
    }
  }
  return s;
}

}  // namespace blip2::testing
