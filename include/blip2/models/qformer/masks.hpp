// blip2/models/qformer/masks.hpp: the Q-Former's own attention masks, as policies (core/mask_policy.hpp
// says what a policy is and holds the generic bidirectional{} and causal{offset}).
//
// Dimensions: Q learned queries, T positions of the sequence [Q queries ; text] (rows and keys).
//
// BLIP-2's four patterns, for a sequence [Q queries ; text] (position p < Q is a query):
//   bidirectional{}            everything allowed (ITC, ITM, and every cross-attention)
//   unimodal_mask{Q}           queries see only queries, text sees only text: two streams, one sequence
//   multimodal_causal_mask{Q}  queries see only queries; text position p sees all queries and text <= p
//   causal{Q}                  ITG's text pass over the queries' cached K/V: rows are text positions
//                              i = 0..T-1 only, columns are Q cached query keys then T text keys;
//                              allowed iff col <= i + Q (the text rows of multimodal_causal_mask{Q})
#pragma once
#include <string_view>

#include "blip2/core/mask_policy.hpp"

namespace blip2 {

struct unimodal_mask {
  static constexpr std::string_view name = "unimodal";
  index_t num_queries = 0;  // Q
  constexpr bool allowed(index_t row, index_t col) const {
    return (row < num_queries) == (col < num_queries);
  }
  void check(index_t rows, index_t cols) const {
    BLIP2_CHECK(rows == cols, shape_error, "unimodal_mask: self-attention over one sequence needs T == S, got T = ",
                rows, ", S = ", cols);
    BLIP2_CHECK(num_queries >= 0 && num_queries <= rows, shape_error, "unimodal_mask: Q = ", num_queries,
                " must be in [0, T = ", rows, "]");
  }
};

struct multimodal_causal_mask {
  static constexpr std::string_view name = "multimodal_causal";
  index_t num_queries = 0;  // Q
  constexpr bool allowed(index_t row, index_t col) const {
    return col < num_queries || (row >= num_queries && col <= row);
  }
  void check(index_t rows, index_t cols) const {
    BLIP2_CHECK(rows == cols, shape_error,
                "multimodal_causal_mask: self-attention over one sequence needs T == S, got T = ", rows, ", S = ",
                cols);
    BLIP2_CHECK(num_queries >= 0 && num_queries <= rows, shape_error, "multimodal_causal_mask: Q = ", num_queries,
                " must be in [0, T = ", rows, "]");
  }
};

}  // namespace blip2
