// blip2/backend/onednn/lane_sum.hpp: a float sum in 8 interleaved partial sums, for the oneDNN backend's
// row loops (LayerNorm backward, softmax backward).
//
// Lane j takes terms j, j + 8, j + 16, ... (the tail continues from lane 0), and the lanes are added in a
// fixed tree at the end: the compiler turns the lanes into vector adds without reassociating anything,
// and the result does not depend on the thread count (a row is one thread's).
#pragma once
#include "blip2/core/tensor_view.hpp"

namespace blip2::onednn_detail {

// sum over c of f(c), c in [0, C)
template <class F>
inline float lane_sum(index_t C, F&& f) {
  float acc[8] = {};
  index_t c = 0;
  for (; c + 8 <= C; c += 8)
    for (int j = 0; j < 8; ++j) acc[j] += f(c + j);
  for (int j = 0; c < C; ++c, ++j) acc[j] += f(c);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace blip2::onednn_detail
