// blip2/mining/fixed_sampler.hpp: negatives given in advance (tests, replaying another run's draws, e.g.
// LAVIS's). sample() checks the inputs like every sampler (mining/negative_sampler.hpp), then that each
// index is a column of its matrix (neg_image[b] in [0, Bi), neg_text[b] in [0, Bt)) and not a positive of
// its row (value_error naming the pair), and copies them. allow_positives = true skips the last check (to
// replay a pathological draw, or to feed the ITM loss a deliberately wrong pair).
#pragma once
#include <utility>
#include <vector>

#include "blip2/mining/negative_sampler.hpp"

namespace blip2 {

struct fixed_sampler {
  static constexpr std::string_view name = "fixed_sampler";

  std::vector<index_t> neg_image;  // (B) image column for each text
  std::vector<index_t> neg_text;   // (B) text column for each image
  bool allow_positives = false;

  fixed_sampler() = default;
  fixed_sampler(std::vector<index_t> images, std::vector<index_t> texts, bool allow_positive_pairs = false)
      : neg_image(std::move(images)), neg_text(std::move(texts)), allow_positives(allow_positive_pairs) {}

  template <class T>
  void sample(const negative_sampling_inputs<T>& in, tensor_view<index_t, 1> out_image, tensor_view<index_t, 1> out_text) const {
    check_negative_sampling(name, in, out_image, out_text);
    const index_t B = in.sim_i2t.extent(0), Bt = in.sim_i2t.extent(1), Bi = in.sim_t2i.extent(1);
    BLIP2_CHECK(static_cast<index_t>(neg_image.size()) == B && static_cast<index_t>(neg_text.size()) == B, shape_error,
                name, ": holds ", neg_image.size(), " negative images and ", neg_text.size(), " negative texts for B = ", B,
                " pairs");
    for (index_t b = 0; b < B; ++b) {
      const index_t i = neg_image[static_cast<std::size_t>(b)], t = neg_text[static_cast<std::size_t>(b)];
      BLIP2_CHECK(i >= 0 && i < Bi, value_error, name, ": neg_image[", b, "] = ", i, " is outside the image columns [0, ", Bi, ")");
      BLIP2_CHECK(t >= 0 && t < Bt, value_error, name, ": neg_text[", b, "] = ", t, " is outside the text columns [0, ", Bt, ")");
      BLIP2_CHECK(allow_positives || !is_positive(in, b, i), value_error, name, ": neg_image[", b, "] = ", i,
                  " is a positive of text ", b, " (the same image)");
      BLIP2_CHECK(allow_positives || !is_positive(in, b, t), value_error, name, ": neg_text[", b, "] = ", t,
                  " is a positive of image ", b, " (the same image)");
    }
    for (index_t b = 0; b < B; ++b) {
      out_image(b) = neg_image[static_cast<std::size_t>(b)];
      out_text(b) = neg_text[static_cast<std::size_t>(b)];
    }
  }
};

}  // namespace blip2
