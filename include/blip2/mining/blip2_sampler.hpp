// blip2/mining/blip2_sampler.hpp: BLIP-2's hard-negative sampler for ITM (LAVIS Blip2Qformer.forward).
//
// Dimensions: B local pairs, N columns of the row (Bi images or Bt texts).
// For each row b of sim_t2i (and of sim_i2t), LAVIS does, without gradient,
//     sim[b, positives] = -10000;  w = softmax(sim[b, :]);  neg = torch.multinomial(w, 1)
// Here: w[j] = exp(sim[b, j] - m) / sum over negatives, m the largest negative logit, and w = 0 exactly at the
// positives. That is LAVIS's softmax up to its positives' mass exp(-10000 - m) / Z, which is 0 in float and
// double whenever a negative logit is above about -9000 (|logit| <= 1 / temp), and it guarantees that a
// positive is never drawn. The draw is an inverse-CDF lookup of
//     u = uniform_double(seed, negative_draw_counter(direction, off + b))
// in the cumulative weights, in double: the same (seed, row) gives the same negative whatever the thread
// count. Errors: see mining/negative_sampler.hpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "blip2/core/rng.hpp"
#include "blip2/mining/negative_sampler.hpp"

namespace blip2 {

struct blip2_sampler {
  static constexpr std::string_view name = "blip2_sampler";

  // The sampling weights of row b in direction d into w (N): 0 at the positives, summing to 1.
  template <class T>
  static void row_weights(const negative_sampling_inputs<T>& in, negative_direction d, index_t b, double* w) {
    const auto z = negative_row(in, d, b);
    const index_t N = z.extent(0);
    double m = -std::numeric_limits<double>::infinity();
    for (index_t j = 0; j < N; ++j)
      if (!is_positive(in, b, j)) m = std::max(m, static_cast<double>(z(j)));
    double sum = 0;
    for (index_t j = 0; j < N; ++j) {
      w[j] = is_positive(in, b, j) ? 0.0 : std::exp(static_cast<double>(z(j)) - m);  // <= 1, the largest is 1
      sum += w[j];
    }
    for (index_t j = 0; j < N; ++j) w[j] /= sum;
  }

  // The whole (B, N) weight matrix of direction d (for tests and inspection); checks the inputs first.
  template <class T>
  static void weights(const negative_sampling_inputs<T>& in, negative_direction d, tensor_view<double, 2> out) {
    std::vector<index_t> dummy(static_cast<std::size_t>(in.sim_i2t.extent(0)));
    const tensor_view<index_t, 1> dv(dummy.data(), {in.sim_i2t.extent(0)});
    check_negative_sampling(name, in, dv, dv);
    const auto& sim = d == negative_direction::image_for_text ? in.sim_t2i : in.sim_i2t;
    detail::check_shape(name, "out", out, sim.extents());
    std::vector<double> w(static_cast<std::size_t>(sim.extent(1)));
    for (index_t b = 0; b < sim.extent(0); ++b) {
      row_weights(in, d, b, w.data());
      for (index_t j = 0; j < sim.extent(1); ++j) out(b, j) = w[static_cast<std::size_t>(j)];
    }
  }

  // One multinomial draw from row b's weights.
  template <class T>
  static index_t draw(const negative_sampling_inputs<T>& in, negative_direction d, index_t b, double* w) {
    const index_t N = negative_row(in, d, b).extent(0);
    row_weights(in, d, b, w);
    const double u = uniform_double(in.seed, negative_draw_counter(d, in.local_offset + b));  // [0, 1)
    double cum = 0;
    index_t last = -1;
    for (index_t j = 0; j < N; ++j) {
      if (w[j] <= 0) continue;
      cum += w[j];
      last = j;
      if (u < cum) return j;
    }
    return last;  // u above the rounded total: the last column with weight
  }

  template <class T>
  void sample(const negative_sampling_inputs<T>& in, tensor_view<index_t, 1> neg_image, tensor_view<index_t, 1> neg_text) {
    check_negative_sampling(name, in, neg_image, neg_text);
    const index_t B = in.sim_i2t.extent(0);
    const index_t N = std::max(in.sim_i2t.extent(1), in.sim_t2i.extent(1));
    // one weight row per pair, sized once (it only grows): no allocation inside the loop
    if (static_cast<index_t>(scratch_.size()) < B * N) scratch_.resize(static_cast<std::size_t>(B * N));
    double* scratch = scratch_.data();
    BLIP2_MINING_OMP_FOR(B)
    for (index_t b = 0; b < B; ++b) {
      double* w = scratch + b * N;
      neg_image(b) = draw(in, negative_direction::image_for_text, b, w);  // LAVIS: multinomial(weights_t2i[b])
      neg_text(b) = draw(in, negative_direction::text_for_image, b, w);   // LAVIS: multinomial(weights_i2t[b])
    }
  }

 private:
  std::vector<double> scratch_;
};

}  // namespace blip2
