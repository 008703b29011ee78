// blip2/core/rows.hpp: the row views every model uses: a range of rows, and sequence-major rows seen
// batch by batch.
//
// Activations are SEQUENCE-MAJOR in the models: row p B + b holds position p of batch element b, so the
// rows of positions [p0, p1) are one dense block, and row-wise ops (linear, LayerNorm, GELU) run on it
// as one matrix; attention reads the same memory as (B, len, C) through strides, with no copy.
#pragma once
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// rows [r0, r1) of an (R, X) view
template <class T, memory_space S>
tensor_view<T, 2, S> row_range(const tensor_view<T, 2, S>& v, index_t r0, index_t r1) {
  return {v.data() + r0 * v.stride(0), {r1 - r0, v.extent(1)}, v.strides()};
}
// elements [r0, r1) of an (R) view
template <class T, memory_space S>
tensor_view<T, 1, S> row_range(const tensor_view<T, 1, S>& v, index_t r0, index_t r1) {
  return {v.data() + r0 * v.stride(0), {r1 - r0}, v.strides()};
}

// (len B, C) sequence-major rows as (B, len, C): element (b, p, c) is row p B + b
template <class T, memory_space S>
tensor_view<T, 3, S> by_batch(const tensor_view<T, 2, S>& rows, index_t B) {
  const index_t C = rows.extent(1), rs = rows.stride(0);
  return {rows.data(), {B, rows.extent(0) / B, C}, {rs, B * rs, rows.stride(1)}};
}

// (B, N, C) dense as (B N, C) rows
template <class T, memory_space S>
tensor_view<T, 2, S> flat_rows(const tensor_view<T, 3, S>& v) {
  return {v.data(), {v.extent(0) * v.extent(1), v.extent(2)}};
}

}  // namespace blip2
