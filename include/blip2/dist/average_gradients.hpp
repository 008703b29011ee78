// blip2/dist/average_gradients.hpp: data parallelism's two steps on the flat parameter and gradient arenas
// (qformer_model::parameters() / gradients()): the gradients averaged over the ranks after every backward,
// and the parameters made identical on every rank before training.
//
//   average_gradients(comm, model.gradients());    g = (1/W) sum over ranks of g, bucket by bucket
//   broadcast_parameters(comm, model.parameters()); every rank gets rank 0's parameters
//
// With the averaged gradients identical on every rank, the clipping and the AdamW update that follow are
// identical too (they are deterministic functions of the gradient, the parameters and the step), so the
// ranks never drift apart and only rank 0 needs to write a checkpoint.
//
// Buckets: one all-reduce per bucket of bucket_elements (default 4 Mi floats, 16 MiB), in order. A bucket
// bounds the temporary memory MPI needs, and is the unit that could start while the backward still runs
// (as torch's DDP does). This implementation starts it after the backward: on one machine the reduction is a
// copy through shared memory by the same cores the backward uses, so overlapping buys nothing there
// (benchmarks/bench_data_parallel.cpp measures what the all-reduce costs).
#pragma once
#include <algorithm>
#include <span>

#include "blip2/dist/communicator.hpp"

namespace blip2 {

inline constexpr std::size_t default_bucket_elements = std::size_t{1} << 22;

template <communicator Comm, class T>
void average_gradients(Comm& comm, std::span<T> grads, std::size_t bucket_elements = default_bucket_elements) {
  BLIP2_CHECK(bucket_elements > 0, value_error, "average_gradients: bucket_elements must be > 0");
  const int W = comm.size();
  if (W == 1) return;
  const T inv = T(1) / static_cast<T>(W);
  for (std::size_t at = 0; at < grads.size(); at += bucket_elements) {
    const auto bucket = grads.subspan(at, std::min(bucket_elements, grads.size() - at));
    comm.all_reduce_sum(bucket);
    for (T& g : bucket) g *= inv;
  }
}

template <communicator Comm, class T>
void broadcast_parameters(Comm& comm, std::span<T> params, int root = 0) {
  if (comm.size() > 1) comm.broadcast(params, root);
}

}  // namespace blip2
