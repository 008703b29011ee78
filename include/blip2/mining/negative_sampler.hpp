// blip2/mining/negative_sampler.hpp: what a hard-negative sampler for ITM is, and the checks all of them share.
//
// Dimensions: B local pairs, Bt columns of texts and Bi columns of images (B plus the other ranks' pairs,
//             loss/itc.hpp), off the column of local pair 0 (rank * B).
// A sampler fills, for every local pair b,
//   neg_image[b] in [0, Bi): an image for text b, read from row b of sim_t2i (B, Bi)
//   neg_text[b]  in [0, Bt): a text for image b,  read from row b of sim_i2t (B, Bt)
// and never a positive. Positives: without image ids, column off + b of row b (LAVIS fills the diagonal of
// the local block); with image ids (one per column, the same for both matrices, so Bi = Bt), every column
// whose id equals ids[off + b] (LAVIS's torch.eq(image_ids, image_ids_all.t())).
// The similarities are ITC's logits (itc_cache::sim_i2t / sim_t2i: similarity / temp), used without
// gradient. Stochastic samplers draw from the counter-based RNG (core/rng.hpp): the draw for row b in a
// direction depends on (seed, negative_draw_counter(direction, off + b)) only, so the result is the same
// for any thread count and any order, and different ranks (different off) draw differently.
//
// Errors (value_error), shared by every sampler through check_negative_sampling():
//   - a batch of one pair and no other rank's pair (Bi = 1 or Bt = 1): there is no negative at all;
//   - a row whose every column is a positive (every pair shows the same image): no negative for that row;
//   - a NaN or infinite similarity, naming the matrix, row and column (LAVIS's torch.multinomial fails
//     there; a diverged model is better reported than sampled from);
//   - shapes that disagree (shape_error).
#pragma once
#include <cmath>
#include <concepts>
#include <cstdint>

#include "blip2/core/check.hpp"

namespace blip2 {

template <class T>
struct negative_sampling_inputs {
  tensor_view<const T, 2> sim_i2t;          // (B, Bt) image b against every text column
  tensor_view<const T, 2> sim_t2i;          // (B, Bi) text b against every image column
  tensor_view<const index_t, 1> image_ids;  // (Bi) image id of every column, or empty: positive = off + b
  index_t local_offset = 0;                 // off: column of local pair 0
  std::uint64_t seed = 0;                   // for the stochastic samplers
};

// Which negative a draw is for.
enum class negative_direction : std::uint64_t {
  image_for_text = 0,  // neg_image[b], from sim_t2i
  text_for_image = 1,  // neg_text[b], from sim_i2t
};

// The RNG counter of the draw for global row r (off + b) in direction d.
constexpr std::uint64_t negative_draw_counter(negative_direction d, index_t global_row) {
  return static_cast<std::uint64_t>(global_row) * 2u + static_cast<std::uint64_t>(d);
}

// A sampler: s.sample(inputs, neg_image, neg_text) fills neg_image (B) and neg_text (B).
template <class S, class T = float>
concept negative_sampler = requires(S& s, const negative_sampling_inputs<T>& in, tensor_view<index_t, 1> idx) {
  s.sample(in, idx, idx);
};

// Whether column col of row b is a positive (the same image) in either matrix.
template <class T>
bool is_positive(const negative_sampling_inputs<T>& in, index_t b, index_t col) {
  const index_t own = in.local_offset + b;
  if (in.image_ids.data() == nullptr) return col == own;
  return in.image_ids(col) == in.image_ids(own);
}

// The similarity row of direction d for local pair b: (Bi) images for text b, or (Bt) texts for image b.
template <class T>
tensor_view<const T, 1> negative_row(const negative_sampling_inputs<T>& in, negative_direction d, index_t b) {
  return slice(d == negative_direction::image_for_text ? in.sim_t2i : in.sim_i2t, b);
}

// The checks every sampler makes before it samples (see the header comment); `who` names the sampler.
template <class T>
void check_negative_sampling(std::string_view who, const negative_sampling_inputs<T>& in, tensor_view<index_t, 1> neg_image,
                             tensor_view<index_t, 1> neg_text) {
  const index_t B = in.sim_i2t.extent(0), Bt = in.sim_i2t.extent(1), Bi = in.sim_t2i.extent(1);
  BLIP2_CHECK(in.sim_t2i.extent(0) == B, shape_error, who, ": sim_i2t has shape ", shape_string(in.sim_i2t),
              " and sim_t2i has shape ", shape_string(in.sim_t2i), "; both need B = ", B, " rows");
  detail::check_shape(who, "neg_image", neg_image, {B});
  detail::check_shape(who, "neg_text", neg_text, {B});
  BLIP2_CHECK(B >= 1, shape_error, who, ": no pairs (B = 0)");
  BLIP2_CHECK(Bi >= 2 && Bt >= 2, value_error, who, ": a batch of one pair (", Bi, " image column(s), ", Bt,
              " text column(s) in all) has no negative: ITM hard-negative mining needs at least two pairs "
              "(local or from other ranks)");
  const index_t off = in.local_offset;
  BLIP2_CHECK(off >= 0 && off + B <= Bi && off + B <= Bt, value_error, who, ": local_offset = ", off, " with B = ", B,
              " does not fit in ", Bi, " image and ", Bt, " text columns");
  if (in.image_ids.data() != nullptr) {
    BLIP2_CHECK(Bi == Bt, shape_error, who, ": with image ids the image and text columns are the same pairs, but sim_t2i has ",
                Bi, " columns and sim_i2t ", Bt);
    detail::check_shape(who, "image_ids", in.image_ids, {Bi});
  }
  for (index_t b = 0; b < B; ++b) {
    for (index_t j = 0; j < Bt; ++j)
      BLIP2_CHECK(std::isfinite(static_cast<double>(in.sim_i2t(b, j))), value_error, who, ": sim_i2t(", b, ", ", j, ") = ",
                  in.sim_i2t(b, j), " is not finite (row ", b, ": image ", b, " against every text)");
    for (index_t j = 0; j < Bi; ++j)
      BLIP2_CHECK(std::isfinite(static_cast<double>(in.sim_t2i(b, j))), value_error, who, ": sim_t2i(", b, ", ", j, ") = ",
                  in.sim_t2i(b, j), " is not finite (row ", b, ": text ", b, " against every image)");
    index_t negatives = 0;
    for (index_t j = 0; j < Bi; ++j) negatives += is_positive(in, b, j) ? 0 : 1;
    BLIP2_CHECK(negatives > 0, value_error, who, ": row ", b, " has no negative: every column has the image id ",
                in.image_ids.data() ? in.image_ids(off + b) : off + b,
                " of pair ", b, " (every pair in the batch shows the same image)");
  }
}

}  // namespace blip2

// An OpenMP loop over the B rows in the samplers (each iteration independent; no exceptions inside); a
// batch of fewer than 16 rows stays on one thread (a parallel region costs more than its draws).
#define BLIP2_MINING_STRINGIFY(x) #x
#if defined(_OPENMP)
#define BLIP2_MINING_OMP_FOR(rows) _Pragma(BLIP2_MINING_STRINGIFY(omp parallel for schedule(static) if ((rows) >= 16)))
#else
#define BLIP2_MINING_OMP_FOR(rows)
#endif
