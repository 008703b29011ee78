// blip2/backend/onednn/fill.hpp: dst = value on the oneDNN backend.
//
// oneDNN has no fill primitive (eltwise linear with alpha = 0 would still read dst, and 0 * NaN is NaN),
// so a dense view is split into one contiguous chunk per thread and each chunk filled with std::fill_n;
// a strided view runs the reference loop.
#pragma once
#include <algorithm>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/fill.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::fill> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 4> dst, T value) {
    if (!dst.is_contiguous()) {
      reference_fallback<op::fill>::run(be, dst, value);  // strided: the reference loop
      return;
    }
    const index_t n = dst.size();
    constexpr index_t min_chunk = 1 << 14;  // below this a second thread costs more than it saves
    const int parts = static_cast<int>(std::clamp<index_t>(n / min_chunk, 1, be.split_threads()));
    T* p = dst.data();
    onednn_detail::run_workers(parts, [&](int t, int nt) {
      const index_t begin = n * t / nt, end = n * (t + 1) / nt;  // (end - begin) elements
      std::fill_n(p + begin, end - begin, value);
    });
  }
};

}  // namespace blip2
