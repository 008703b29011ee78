// blip2/backend/reference/embedding.hpp: embedding (row gather) kernels of the reference backend.
// Dimensions: N looked-up positions, V table rows, C channels. Arguments (ids inside [0, V)) are
// checked by the public op (blip2::embedding_*).
#pragma once
#include <algorithm>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::embedding_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> out, tensor_view<const index_t, 1> ids,
                  tensor_view<const T, 2> table) {
    const index_t N = out.extent(0), C = out.extent(1);
    BLIP2_OMP_FOR
    for (index_t n = 0; n < N; ++n) {
      const index_t id = ids(n);
      for (index_t c = 0; c < C; ++c) out(n, c) = table(id, c);
    }
  }
};

template <>
struct kernel<reference_backend, op::embedding_backward> {
  // Each parallel task owns a block of columns of dtable, so repeated ids never race, and every element
  // sums its contributions in the order n = 0, 1, ...: the result is the same whatever the thread count
  // and the block width. The width: the columns split evenly over the threads, in multiples of 16, at
  // least 64 (narrow blocks are several times slower; timings in benchmarks/README.md).
  static index_t channel_block(index_t C) {
    index_t threads = 1;
#if defined(_OPENMP)
    threads = omp_get_max_threads();
#endif
    return std::max<index_t>(64, ((C + threads - 1) / threads + 15) / 16 * 16);
  }

  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dtable, tensor_view<const T, 2> dout,
                  tensor_view<const index_t, 1> ids, index_t padding_idx) {
    const index_t N = dout.extent(0), C = dout.extent(1), block = channel_block(C);
    const index_t blocks = (C + block - 1) / block;
    BLIP2_OMP_FOR
    for (index_t blk = 0; blk < blocks; ++blk) {
      const index_t c0 = blk * block, c1 = std::min(C, c0 + block);
      for (index_t n = 0; n < N; ++n) {
        // forward: out[n, c] = table[ids[n], c]; dtable[ids[n], c] += dout[n, c]
        const index_t id = ids(n);
        if (id == padding_idx) continue;  // nn.Embedding(padding_idx=...): that row gets no gradient
        for (index_t c = c0; c < c1; ++c) dtable(id, c) += dout(n, c);
      }
    }
  }
};

}  // namespace blip2
