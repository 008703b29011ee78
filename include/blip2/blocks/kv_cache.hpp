// blip2/blocks/kv_cache.hpp: the keys and values a self-attention layer has computed, with room for more.
//
// Dimensions: B batch, Smax positions of capacity, S = length() positions filled, C hidden.
// Sequence-major like every activation (core/rows.hpp): row p B + b holds position p of batch element b,
// so appending a step (one position of every sequence) appends B dense rows, and keys() views the filled
// rows as (B, S, C) for attention without a copy.
//
// Who uses it:
//   - every self-attention block appends its pass's keys and values and attends over all filled rows;
//   - a decoder prefills a prompt, then appends one position per generated token;
//   - a pass that attends to another pass's keys first (ITG's text over the queries' K/V) FORKS that
//     pass's cache: its own cache starts with a copy of those rows, and remembers where they came from.
// dk, dv: gradients of the cached rows, when the cache is laid out for backward. Gradients of keys at
// earlier positions go to the cache that computed them (the parent for a fork's copied rows, else this
// one); the block that appended rows reads their dk/dv back in its own backward and adds it to its keys'
// gradient. append() zeroes the gradients of the rows it adds.
#pragma once
#include <vector>

#include "blip2/core/arena.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/fill.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
struct kv_cache {
  index_t B = 0;
  tensor_view<T, 2, Space> k, v;    // (Smax B, C)
  tensor_view<T, 2, Space> dk, dv;  // (Smax B, C), or empty: no backward
  index_t len = 0;                  // S positions filled
  kv_cache* parent = nullptr;       // a fork's source: the owner of the copied positions' gradients

  index_t capacity() const { return B ? k.extent(0) / B : 0; }
  index_t length() const { return len; }
  // rows of positions [p0, p1) (p1 <= capacity)
  tensor_view<T, 2, Space> k_rows(index_t p0, index_t p1) const { return row_range(k, p0 * B, p1 * B); }
  tensor_view<T, 2, Space> v_rows(index_t p0, index_t p1) const { return row_range(v, p0 * B, p1 * B); }
  tensor_view<T, 2, Space> dk_rows(index_t p0, index_t p1) const { return row_range(dk, p0 * B, p1 * B); }
  tensor_view<T, 2, Space> dv_rows(index_t p0, index_t p1) const { return row_range(dv, p0 * B, p1 * B); }
  // positions [0, S) as (B, S, C), for attention
  tensor_view<T, 3, Space> keys(index_t S) const { return by_batch(k_rows(0, S), B); }
  tensor_view<T, 3, Space> values(index_t S) const { return by_batch(v_rows(0, S), B); }

  // Make room for n more positions: returns the first one (the rows to write are [p, p + n)), zeroes
  // their gradients and counts them as filled.
  template <backend Be>
  index_t append(Be& be, index_t n) {
    const index_t p = len;
    BLIP2_CHECK(p + n <= capacity(), shape_error, "kv_cache: ", n, " more positions do not fit: ", p, " of ",
                capacity(), " are filled");
    if (dk.data()) {
      fill(be, dk_rows(p, p + n), T{});
      fill(be, dv_rows(p, p + n), T{});
    }
    len = p + n;
    return p;
  }

  // Start as a copy of src's filled positions (forking it): later appends go after them, and the
  // gradients of those positions go back to src, which must be laid out for backward.
  template <backend Be>
  void fork_from(Be& be, kv_cache& src) {
    BLIP2_CHECK(src.B == B && src.len <= capacity(), shape_error, "kv_cache: cannot fork a cache of batch ", src.B,
                " and ", src.len, " positions into one of batch ", B, " and capacity ", capacity());
    BLIP2_CHECK(src.dk.data() != nullptr, value_error,
                "kv_cache: the forked cache keeps no gradients (lay it out for backward)");
    copy(be, k_rows(0, src.len), src.k_rows(0, src.len));
    copy(be, v_rows(0, src.len), src.v_rows(0, src.len));
    len = src.len;
    parent = &src;
  }
  // The cache that owns the gradient of position p < length(): the parent for forked positions.
  kv_cache& owner_of_prefix() { return parent ? *parent : *this; }

  // Views from a carver: Smax positions of B sequences, width C; with_grad lays out dk, dv too.
  template <class Carver>
  void lay_out(Carver& a, index_t batch, index_t max_positions, index_t C, bool with_grad) {
    B = batch;
    len = 0;
    parent = nullptr;
    k = a.template take<2>({max_positions * batch, C});
    v = a.template take<2>({max_positions * batch, C});
    dk = dv = {};
    if (with_grad) {
      dk = a.template take<2>({max_positions * batch, C});
      dv = a.template take<2>({max_positions * batch, C});
    }
  }
};

// One cache per layer, in one allocation.
template <class T, memory_space Space = host_space>
struct layer_kv_caches {
  std::vector<kv_cache<T, Space>> layers;
  buffer<T, Space> storage;

  // num_layers caches of max_positions positions of B sequences, width C (re-allocated only to grow);
  // every cache starts empty.
  void reserve(index_t num_layers, index_t B, index_t max_positions, index_t C, bool with_grad) {
    lay_out(storage, [&](auto& a) {
      layers.resize(static_cast<std::size_t>(num_layers));
      for (auto& c : layers) c.lay_out(a, B, max_positions, C, with_grad);
    });
  }
  // forget every position (the capacity stays)
  void clear() {
    for (auto& c : layers) c.len = 0, c.parent = nullptr;
  }
  // every layer's cache forks src's (same number of layers)
  template <backend Be>
  void fork_from(Be& be, layer_kv_caches& src) {
    BLIP2_CHECK(src.layers.size() == layers.size(), shape_error, "layer_kv_caches: cannot fork ", src.layers.size(),
                " layers into ", layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) layers[l].fork_from(be, src.layers[l]);
  }
  index_t length() const { return layers.empty() ? 0 : layers.front().len; }
  index_t batch() const { return layers.empty() ? 0 : layers.front().B; }
};

}  // namespace blip2
