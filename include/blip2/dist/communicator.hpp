// blip2/dist/communicator.hpp: what a communicator between W processes ("ranks") is, and the one every
// program has by default: a single process.
//
// Data parallelism in blip2 is written against this concept, so the library itself never depends on MPI:
// the MPI implementation (dist/mpi_communicator.hpp) is the optional part blip2::mpi. A communicator moves
// float, double and int64 (index_t) buffers; every call is collective: every rank of the communicator
// makes it, in the same order, with matching sizes (else MPI reports an error or hangs, as MPI does).
//
//   rank(), size()                         this process's rank in [0, W), and W
//   all_reduce_sum(buf)                    buf = the element-wise sum of every rank's buf, in place
//   all_gather(local, all)                 all (W n) = [rank 0's local (n) ; rank 1's ; ...]; in place
//                                          when local is already all's block r (local.data() == all.data() + r n)
//   reduce_scatter_sum(all, mine)          mine (n) = block r of the element-wise sum of every rank's all (W n)
//   all_to_all_v(send, send_counts, recv, recv_counts)
//                                          send holds the blocks for ranks 0..W-1 one after the other
//                                          (send_counts[d] elements for rank d); recv gets the blocks from
//                                          ranks 0..W-1 (recv_counts[s] from rank s) in rank order
//   broadcast(buf, root)                   buf = root's buf on every rank
//   barrier()
//
// single_process_communicator (W = 1) is the default everywhere: every operation is the identity (or a
// copy), so code written for W ranks runs unchanged, at no cost, in one process.
#pragma once
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

template <class C>
concept communicator = requires(C& c, std::span<float> f, std::span<const float> cf, std::span<double> d,
                                std::span<index_t> i, std::span<const index_t> ci, std::span<const std::size_t> counts) {
  { c.rank() } -> std::convertible_to<int>;
  { c.size() } -> std::convertible_to<int>;
  c.all_reduce_sum(f);
  c.all_reduce_sum(d);
  c.all_reduce_sum(i);
  c.all_gather(cf, f);
  c.all_gather(ci, i);
  c.reduce_scatter_sum(cf, f);
  c.all_to_all_v(cf, counts, f, counts);
  c.all_to_all_v(ci, counts, i, counts);
  c.broadcast(f, 0);
  c.broadcast(i, 0);
  c.barrier();
};

namespace detail {
// The checks every communicator makes on its arguments (so a size mismatch is a clear error, not a
// corrupted buffer); `who` names the operation.
inline void check_gather_sizes(std::string_view who, std::size_t local, std::size_t all, int W) {
  BLIP2_CHECK(all == local * static_cast<std::size_t>(W), shape_error, who, ": the gathered buffer has ", all,
              " elements; it needs W * n = ", W, " * ", local);
}
inline std::size_t check_counts(std::string_view who, const char* what, std::span<const std::size_t> counts, std::size_t size,
                                int W) {
  BLIP2_CHECK(counts.size() == static_cast<std::size_t>(W), shape_error, who, ": ", what, " has ", counts.size(),
              " entries for ", W, " ranks");
  std::size_t total = 0;
  for (std::size_t c : counts) total += c;
  BLIP2_CHECK(total == size, shape_error, who, ": ", what, " add up to ", total, " elements but the buffer has ", size);
  return total;
}
}  // namespace detail

// One process: rank 0 of 1.
struct single_process_communicator {
  static constexpr std::string_view name = "single process";
  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce_sum(std::span<T>) {}
  template <class T>
  void all_gather(std::span<const T> local, std::span<T> all) {
    detail::check_gather_sizes("all_gather", local.size(), all.size(), 1);
    if (local.data() != all.data()) std::copy(local.begin(), local.end(), all.begin());
  }
  template <class T>
  void reduce_scatter_sum(std::span<const T> all, std::span<T> mine) {
    detail::check_gather_sizes("reduce_scatter_sum", mine.size(), all.size(), 1);
    if (all.data() != mine.data()) std::copy(all.begin(), all.end(), mine.begin());
  }
  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const std::size_t> send_counts, std::span<T> recv,
                    std::span<const std::size_t> recv_counts) {
    detail::check_counts("all_to_all_v", "send_counts", send_counts, send.size(), 1);
    detail::check_counts("all_to_all_v", "recv_counts", recv_counts, recv.size(), 1);
    BLIP2_CHECK(send.size() == recv.size(), shape_error, "all_to_all_v: one rank sends ", send.size(),
                " elements to itself but receives ", recv.size());
    std::copy(send.begin(), send.end(), recv.begin());
  }
  template <class T>
  void broadcast(std::span<T>, int root) {
    BLIP2_CHECK(root == 0, value_error, "broadcast: root ", root, " is not a rank of a single process");
  }
  void barrier() {}
};
static_assert(communicator<single_process_communicator>);

}  // namespace blip2
