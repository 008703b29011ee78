// blip2/blocks/row_plan.hpp: which rows of a pass are computed, decided once per pass.
//
// Dimensions: B batch, L positions, R positions the last layer outputs, Lp computed ("packed") rows.
//
// A pass over L positions has L B rows in the ATTENTION LAYOUT (sequence-major: row p B + b is position
// p of batch element b), which attention reads as (B, L, C). Two optimisations leave rows out of the
// row-wise work (linear, LayerNorm, activation), and this object is the only place that knows them:
//   - skipping: a row nothing reads (a padded text position: every query masks its key out, so its
//     softmax weight underflows to 0 and it changes no other row) is not computed. The computed rows
//     are kept in sequence-major order, PACKED into Lp dense rows; attention still runs in the attention
//     layout, with zero rows scattered in for the skipped ones (unpack) and gathered back after (pack).
//   - truncation: when a head reads only positions [0, R) of the last layer's output, that layer
//     computes keys and values for every row but queries, attention and everything after for the rows
//     of positions [0, R) only (out_rows(last = true)).
// Blocks work on dense rows and call pack/unpack around attention; a layer asks only how many rows it
// outputs. Without skipping, packed rows ARE the attention layout and pack/unpack are never called.
#pragma once
#include <span>
#include <vector>

#include "blip2/core/index_list.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/fill.hpp"

namespace blip2 {

template <memory_space Space = host_space>
class row_plan {
 public:
  row_plan() = default;
  // Every row of L positions computed; the last layer outputs positions [0, R) (R = L: all).
  row_plan(index_t B, index_t L, index_t R) : B_(B), L_(L), R_(R) {
    pos_rows_.resize(static_cast<std::size_t>(L + 1));
    for (index_t p = 0; p <= L; ++p) pos_rows_[static_cast<std::size_t>(p)] = p * B;
  }
  // Only the rows with keep(b, p) true are computed (when every row or no row is kept, nothing is packed).
  template <class Keep>
  row_plan(index_t B, index_t L, index_t R, Keep&& keep) : row_plan(B, L, R) {
    std::vector<index_t> kept;
    for (index_t p = 0; p < L; ++p) {
      pos_rows_[static_cast<std::size_t>(p)] = static_cast<index_t>(kept.size());
      for (index_t b = 0; b < B; ++b)
        if (keep(b, p)) kept.push_back(p * B + b);
    }
    pos_rows_[static_cast<std::size_t>(L)] = static_cast<index_t>(kept.size());
    // nothing to skip, or nothing kept (a plan of no rows would leave a pass nothing to output): dense
    if (static_cast<index_t>(kept.size()) == L * B || kept.empty()) {
      for (index_t p = 0; p <= L; ++p) pos_rows_[static_cast<std::size_t>(p)] = p * B;
      return;
    }
    padded_rows_.host = std::move(kept);
  }

  index_t batch() const { return B_; }
  index_t positions() const { return L_; }
  index_t rows() const { return pos_rows_.empty() ? 0 : pos_rows_.back(); }  // Lp
  bool packed() const { return padded_rows_.size() > 0; }
  // computed rows of positions [0, p): they are the first ones, positions in order
  index_t rows_before(index_t p) const { return pos_rows_[static_cast<std::size_t>(p)]; }
  // positions and computed rows that a layer outputs: all, or [0, R) in the last layer
  index_t out_positions(bool last) const { return last ? R_ : L_; }
  index_t out_rows(bool last) const { return rows_before(out_positions(last)); }
  // the attention-layout row of each packed row (empty when not packed)
  std::span<const index_t> padded_rows() const { return padded_rows_.host; }

  // Copy the row index to the backend's memory once, before pack/unpack (nothing to do on the host).
  template <backend Be>
  void upload(Be& be) {
    padded_rows_.upload(be);
  }

  // padded (n_pos B, C) = the first n packed rows scattered to their attention rows, every other row 0
  template <backend Be, class T>
  void unpack(Be& be, tensor_view<T, 2, Space> padded, tensor_view<const T, 2, Space> packed_rows) const {
    fill(be, padded, T{});
    embedding_backward(be, padded, packed_rows, padded_rows_.view(0, packed_rows.extent(0)));
  }
  // packed (n, C) = the attention rows of the first n packed rows, gathered
  template <backend Be, class T>
  void pack(Be& be, tensor_view<T, 2, Space> packed_rows, tensor_view<const T, 2, Space> padded) const {
    embedding_forward(be, packed_rows, padded_rows_.view(0, packed_rows.extent(0)), padded);
  }

 private:
  index_t B_ = 0, L_ = 0, R_ = 0;
  std::vector<index_t> pos_rows_;       // (L + 1) computed rows before position p
  index_list<Space> padded_rows_;       // (Lp) attention row of each packed row; empty: not packed
};

}  // namespace blip2
