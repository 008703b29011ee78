// blip2/mining/uniform_sampler.hpp: a negative drawn uniformly among the non-positive columns, whatever the
// similarities (the "random negatives" ablation). The draw for row b uses
//     u = uniform_double(seed, negative_draw_counter(direction, off + b)),  the k = floor(u n)-th negative
// (n negatives in the row), so it does not depend on the thread count. The similarities are still checked
// (finite, shapes): see mining/negative_sampler.hpp.
#pragma once
#include <algorithm>

#include "blip2/core/rng.hpp"
#include "blip2/mining/negative_sampler.hpp"

namespace blip2 {

struct uniform_sampler {
  static constexpr std::string_view name = "uniform_sampler";

  template <class T>
  static index_t pick(const negative_sampling_inputs<T>& in, negative_direction d, index_t b) {
    const index_t N = negative_row(in, d, b).extent(0);
    index_t n = 0;
    for (index_t j = 0; j < N; ++j) n += is_positive(in, b, j) ? 0 : 1;
    const double u = uniform_double(in.seed, negative_draw_counter(d, in.local_offset + b));  // [0, 1)
    index_t k = std::min(static_cast<index_t>(u * static_cast<double>(n)), n - 1);
    for (index_t j = 0; j < N; ++j)
      if (!is_positive(in, b, j) && k-- == 0) return j;
    return -1;  // unreachable: n >= 1 (checked)
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
