// blip2/mining/hardest_sampler.hpp: the hardest negative, deterministically: for each row, the non-positive
// column with the largest similarity (the first one on ties). An ablation of BLIP-2's sampled negatives
// (mining/blip2_sampler.hpp); the seed is not used. Errors: see mining/negative_sampler.hpp.
#pragma once
#include "blip2/mining/negative_sampler.hpp"

namespace blip2 {

struct hardest_sampler {
  static constexpr std::string_view name = "hardest_sampler";

  // argmax over the non-positive columns of row b in direction d
  template <class T>
  static index_t pick(const negative_sampling_inputs<T>& in, negative_direction d, index_t b) {
    const auto z = negative_row(in, d, b);
    index_t best = -1;
    for (index_t j = 0; j < z.extent(0); ++j)
      if (!is_positive(in, b, j) && (best < 0 || z(j) > z(best))) best = j;
    return best;  // >= 0: check_negative_sampling made sure a negative exists
  }

  template <class T>
  void sample(const negative_sampling_inputs<T>& in, tensor_view<index_t, 1> neg_image, tensor_view<index_t, 1> neg_text) const {
    check_negative_sampling(name, in, neg_image, neg_text);
    const index_t B = in.sim_i2t.extent(0);
    BLIP2_MINING_OMP_FOR(B)
    for (index_t b = 0; b < B; ++b) {
      neg_image(b) = pick(in, negative_direction::image_for_text, b);
      neg_text(b) = pick(in, negative_direction::text_for_image, b);
    }
  }
};

}  // namespace blip2
