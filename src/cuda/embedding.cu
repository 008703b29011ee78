// src/cuda/embedding.cu: embedding, forward (row gather) and backward (scatter-add).
//   id check: one thread per position (grid-stride) marks the first position whose id is outside [0, V)
//             (atomicMin on one word of scratch); the host reads that word after the main kernel, and
//             throws value_error when it is set. The main kernel reads the word first and writes nothing
//             when it is set, so a call that throws leaves out / dtable as they were (as on the host,
//             where the public op checks before the kernel runs).
//   forward:  one thread per element of out (grid-stride over N C, row-major): out(n, c) = table(ids(n), c).
//   backward: one thread per element of dout (grid-stride over N C): atomicAdd into dtable(ids(n), c),
//             skipping the positions whose id is padding_idx. Repeated ids add in no fixed order (the
//             reference adds in the order n = 0, 1, ...), so float sums may differ in the last bits.
#include <string>

#include "blip2/backend/cuda/embedding.hpp"
#include "common.cuh"

namespace blip2::cuda_detail {
namespace {

using word = unsigned long long;
constexpr word no_bad_position = ~word{0};
constexpr int first_bad_slot = -101;  // be.scratch slot of the word, used only inside one call

__global__ void find_bad_id_kernel(dview<const index_t, 1> ids, index_t V, word* first_bad) {
  const index_t N = ids.e[0];
  for (index_t n = blockIdx.x * index_t(blockDim.x) + threadIdx.x; n < N; n += index_t(gridDim.x) * blockDim.x) {
    const index_t id = ids(n);
    if (id < 0 || id >= V) atomicMin(first_bad, static_cast<word>(n));
  }
}

__global__ void gather_kernel(dview<float, 2> out, dview<const index_t, 1> ids, dview<const float, 2> table,
                              const word* first_bad) {
  if (*first_bad != no_bad_position) return;  // an id is out of range: the host throws, nothing is written
  const index_t C = out.e[1], total = out.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t n = i / C, c = i % C;
    out(n, c) = table(ids(n), c);
  }
}

__global__ void scatter_add_kernel(dview<float, 2> dtable, dview<const float, 2> dout, dview<const index_t, 1> ids,
                                   index_t padding_idx, const word* first_bad) {
  if (*first_bad != no_bad_position) return;
  const index_t C = dout.e[1], total = dout.e[0] * C;
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t n = i / C, c = i % C;
    // forward: out[n, c] = table[ids[n], c]; dtable[ids[n], c] += dout[n, c]
    const index_t id = ids(n);
    if (id == padding_idx) continue;  // nn.Embedding(padding_idx=...): that row gets no gradient
    atomicAdd(&dtable(id, c), dout(n, c));
  }
}

// Queues the id check; returns the device word the main kernel reads.
word* queue_id_check(cuda_backend& be, tensor_view<const index_t, 1, cuda_space> ids, index_t V) {
  auto* first_bad = static_cast<word*>(be.scratch(first_bad_slot, sizeof(word)));
  check(cudaMemsetAsync(first_bad, 0xFF, sizeof(word), stream_of(be)), "embedding: clearing the id check");
  find_bad_id_kernel<<<grid_for(ids.extent(0)), 256, 0, stream_of(be)>>>(dv(ids), V, first_bad);
  check_launch("embedding id check");
  return first_bad;
}

// Waits for the stream and throws value_error when the check found an id outside [0, V). The position
// is the flat one (the n-th id in row-major order: ids (B, T) arrive here flattened).
void finish_id_check(cuda_backend& be, const char* op, tensor_view<const index_t, 1, cuda_space> ids, index_t V,
                     const word* first_bad) {
  word first = no_bad_position;
  check(cudaMemcpyAsync(&first, first_bad, sizeof first, cudaMemcpyDeviceToHost, stream_of(be)),
        "embedding: reading the id check");
  be.synchronize();
  if (first == no_bad_position) return;
  const auto n = static_cast<index_t>(first);
  index_t id = 0;
  check(cudaMemcpyAsync(&id, ids.data() + n * ids.stride(0), sizeof id, cudaMemcpyDeviceToHost, stream_of(be)),
        "embedding: reading a bad id");
  be.synchronize();
  throw value_error(std::string(op) + ": ids(" + std::to_string(n) + ") = " + std::to_string(id) +
                    " is outside the table's rows [0, V) with V = " + std::to_string(V) +
                    " (the position counts the ids in row-major order)");
}

}  // namespace

void embedding_forward(cuda_backend& be, tensor_view<float, 2, cuda_space> out,
                       tensor_view<const index_t, 1, cuda_space> ids, tensor_view<const float, 2, cuda_space> table) {
  const index_t N = ids.extent(0), V = table.extent(0);
  if (N == 0) return;  // no ids: nothing to check or write
  const word* first_bad = queue_id_check(be, ids, V);
  if (out.size() > 0) {
    gather_kernel<<<grid_for(out.size()), 256, 0, stream_of(be)>>>(dv(out), dv(ids), dv(table), first_bad);
    check_launch("embedding_forward");
  }
  finish_id_check(be, "embedding_forward", ids, V, first_bad);
}

void embedding_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dtable,
                        tensor_view<const float, 2, cuda_space> dout, tensor_view<const index_t, 1, cuda_space> ids,
                        index_t padding_idx) {
  const index_t N = ids.extent(0), V = dtable.extent(0);
  if (N == 0) return;
  const word* first_bad = queue_id_check(be, ids, V);
  if (dout.size() > 0) {
    scatter_add_kernel<<<grid_for(dout.size()), 256, 0, stream_of(be)>>>(dv(dtable), dv(dout), dv(ids), padding_idx,
                                                                          first_bad);
    check_launch("embedding_backward");
  }
  finish_id_check(be, "embedding_backward", ids, V, first_bad);
}

}  // namespace blip2::cuda_detail
