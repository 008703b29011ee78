// blip2/dist/fetch_rows.hpp: rows of a table that is sharded over the ranks, fetched from their owners.
//
// Dimensions: B rows per rank (rank r owns global rows [r B, (r + 1) B)), R rows wanted here, F elements
// per row.
//   fetch_rows(comm, wanted (R global row indices), local (B, F), out (R, F)):  out[i] = row wanted[i]
// ITM's hard negatives use it: a negative image of pair b can be any image of the world batch, and only the
// chosen ones travel (at most B per rank), not the whole world's image embeddings.
// Three collectives: how many rows each rank asks of each other (all_to_all_v of W counts), which rows
// (all_to_all_v of the indices), then the rows themselves. Rows owned here are copied without MPI.
// Every rank must call it (with R = 0 when it needs nothing).
#pragma once
#include <algorithm>
#include <vector>

#include "blip2/core/check.hpp"
#include "blip2/dist/communicator.hpp"

namespace blip2 {

template <communicator Comm, class T>
void fetch_rows(Comm& comm, std::span<const index_t> wanted, tensor_view<const T, 2> local, tensor_view<T, 2> out) {
  constexpr std::string_view op = "fetch_rows";
  const index_t B = local.extent(0), F = local.extent(1), R = static_cast<index_t>(wanted.size());
  const int W = comm.size(), me = comm.rank();
  detail::check_shape(op, "out", out, {R, F});
  BLIP2_CHECK(local.is_contiguous() && out.is_contiguous(), shape_error, op, ": local and out must be contiguous");
  const std::size_t Wz = static_cast<std::size_t>(W);
  // requests per owner, in the order wanted lists them
  std::vector<std::vector<index_t>> ask(Wz);
  std::vector<std::vector<index_t>> slot(Wz);  // where each requested row goes in out
  for (index_t i = 0; i < R; ++i) {
    const index_t g = wanted[static_cast<std::size_t>(i)];
    BLIP2_CHECK(g >= 0 && g < B * W, value_error, op, ": wanted row ", g, " is outside [0, ", B * W, ") (", W,
                " ranks of ", B, " rows)");
    const int owner = static_cast<int>(g / B);
    if (owner == me) {
      std::copy_n(local.data() + (g - me * B) * F, F, out.data() + i * F);
      continue;
    }
    ask[static_cast<std::size_t>(owner)].push_back(g - owner * B);
    slot[static_cast<std::size_t>(owner)].push_back(i);
  }
  // 1: how many rows each rank asks of each other
  std::vector<index_t> n_ask(Wz), n_asked(Wz);
  for (std::size_t r = 0; r < Wz; ++r) n_ask[r] = static_cast<index_t>(ask[r].size());
  const std::vector<std::size_t> ones(Wz, 1);
  comm.all_to_all_v(std::span<const index_t>(n_ask), std::span<const std::size_t>(ones), std::span<index_t>(n_asked),
                    std::span<const std::size_t>(ones));
  // 2: which rows
  std::vector<std::size_t> send_n(Wz), recv_n(Wz);
  std::vector<index_t> flat_ask, flat_asked;
  for (std::size_t r = 0; r < Wz; ++r) {
    send_n[r] = ask[r].size();
    recv_n[r] = static_cast<std::size_t>(n_asked[r]);
    flat_ask.insert(flat_ask.end(), ask[r].begin(), ask[r].end());
  }
  std::size_t total_asked = 0;
  for (auto n : recv_n) total_asked += n;
  flat_asked.resize(total_asked);
  comm.all_to_all_v(std::span<const index_t>(flat_ask), std::span<const std::size_t>(send_n), std::span<index_t>(flat_asked),
                    std::span<const std::size_t>(recv_n));
  // 3: the rows: pack what the others asked of me, receive what I asked
  std::vector<T> send_rows(total_asked * static_cast<std::size_t>(F)), recv_rows(flat_ask.size() * static_cast<std::size_t>(F));
  for (std::size_t k = 0; k < total_asked; ++k) {
    const index_t row = flat_asked[k];
    BLIP2_CHECK(row >= 0 && row < B, communication_error, op, ": rank ", me, " was asked for its row ", row,
                " but holds ", B, " (the ranks disagree on B)");
    std::copy_n(local.data() + row * F, F, send_rows.data() + k * static_cast<std::size_t>(F));
  }
  std::vector<std::size_t> send_e(Wz), recv_e(Wz);
  for (std::size_t r = 0; r < Wz; ++r) send_e[r] = recv_n[r] * static_cast<std::size_t>(F), recv_e[r] = send_n[r] * static_cast<std::size_t>(F);
  comm.all_to_all_v(std::span<const T>(send_rows), std::span<const std::size_t>(send_e), std::span<T>(recv_rows),
                    std::span<const std::size_t>(recv_e));
  std::size_t k = 0;
  for (std::size_t r = 0; r < Wz; ++r)
    for (index_t i : slot[r]) std::copy_n(recv_rows.data() + (k++) * static_cast<std::size_t>(F), F, out.data() + i * F);
}

}  // namespace blip2
