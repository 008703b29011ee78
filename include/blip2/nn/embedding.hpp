// blip2/nn/embedding.hpp: embedding lookup (gather rows of a table), forward and backward.
//
// Dimensions: B batch, T text positions, N = B T looked-up positions, V table rows (the vocabulary or
// the positions), C channels.
//   forward:  out[n, :] = table[ids[n], :]          ids (N) -> out (N, C), or ids (B, T) -> out (B, T, C)
//   backward: dtable[ids[n], :] += dout[n, :]       a scatter-add: a parameter gradient, always accumulated;
//             positions whose id equals padding_idx add nothing (PyTorch's nn.Embedding(padding_idx=...),
//             which BERT's word embeddings use with the pad token); -1, the default, skips nothing
// ids are int64 (blip2::index_t); an id outside [0, V) is a value_error naming its position, the id and V.
#pragma once
#include <type_traits>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {

// ids (N) or (B, T) as a rank-1 view of N positions in row-major order.
template <class Be, class Ids>
auto embedding_ids(Ids&& ids) {
  auto v = view(std::forward<Ids>(ids));
  using V = decltype(v);
  static_assert(std::is_same_v<typename V::value_type, index_t>,
                "embedding: ids must be int64 (blip2::index_t)");
  static_assert(V::rank == 1 || V::rank == 2, "embedding: ids must have shape (N) or (B, T)");
  if constexpr (V::rank == 1) {
    return as_const(arg_view<Be, 1>(v));
  } else {
    auto r = as_const(arg_view<Be, 2>(v));  // (B, T): one stride for all B T positions when dense by rows
    BLIP2_CHECK(r.extent(0) <= 1 || r.extent(1) <= 1 || r.stride(0) == r.stride(1) * r.extent(1), shape_error,
                "embedding: ids of shape ", shape_string(v), " are not dense along the batch");
    const index_t step = r.extent(1) == 1 ? r.stride(0) : r.stride(1);
    return tensor_view<const index_t, 1, typename V::memory_space_type>(r.data(), {r.extent(0) * r.extent(1)},
                                                                        {step});
  }
}

// Every id inside [0, V); the position is printed as the caller shaped ids. Host memory only: a device
// backend checks in its kernel.
template <class Ids>
void check_ids(std::string_view op, const Ids& ids, index_t V) {
  if constexpr (Ids::memory_space_type::host_accessible) {
    if constexpr (Ids::rank == 1) {
      for (index_t n = 0; n < ids.extent(0); ++n)
        BLIP2_CHECK(ids(n) >= 0 && ids(n) < V, value_error, op, ": ids(", n, ") = ", ids(n),
                    " is outside the table's rows [0, V) with V = ", V);
    } else {
      for (index_t b = 0; b < ids.extent(0); ++b)
        for (index_t t = 0; t < ids.extent(1); ++t)
          BLIP2_CHECK(ids(b, t) >= 0 && ids(b, t) < V, value_error, op, ": ids(", b, ", ", t, ") = ", ids(b, t),
                      " is outside the table's rows [0, V) with V = ", V);
    }
  }
}

// out or dout: (N, C) for ids (N), (B, T, C) for ids (B, T).
template <class Rows, class Ids>
void check_embedding_rows(std::string_view op, std::string_view name, const Rows& rows, const Ids& ids, index_t C) {
  static_assert(Rows::rank == Ids::rank + 1, "embedding: out/dout must have one dimension more than ids");
  extents_t<Rows::rank> e{};
  for (std::size_t d = 0; d < Ids::rank; ++d) e[d] = ids.extent(d);
  e[Ids::rank] = C;
  check_shape(op, name, rows, e);
}

}  // namespace detail

template <backend Be, class Out, class Ids, class Table>
void embedding_forward(Be& be, Out&& out, Ids&& ids, Table&& table) {
  constexpr std::string_view op = "embedding_forward";
  auto tab = detail::as_const(detail::arg_view<Be, 2>(table));  // (V, C)
  auto ov = view(out);
  auto idv = view(ids);
  const index_t V = tab.extent(0), C = tab.extent(1);
  static_assert(detail::same_value_type_v<decltype(ov), decltype(tab)>,
                "embedding_forward: out and table differ in type");
  detail::check_embedding_rows(op, "out", ov, idv, C);
  detail::check_ids(op, idv, V);
  auto o = detail::arg_rows<Be>(ov);                // (N, C)
  auto flat = detail::embedding_ids<Be>(idv);       // (N)
  BLIP2_DISPATCH(Be, embedding_forward, be, o, flat, tab);
}

template <backend Be, class DTable, class DOut, class Ids>
void embedding_backward(Be& be, DTable&& dtable, DOut&& dout, Ids&& ids, index_t padding_idx = -1) {
  constexpr std::string_view op = "embedding_backward";
  auto dtab = detail::arg_view<Be, 2>(dtable);  // (V, C)
  auto dov = view(dout);
  auto idv = view(ids);
  const index_t V = dtab.extent(0), C = dtab.extent(1);
  static_assert(detail::same_value_type_v<decltype(dov), decltype(dtab)>,
                "embedding_backward: dout and dtable differ in type");
  detail::check_embedding_rows(op, "dout", dov, idv, C);
  detail::check_ids(op, idv, V);
  auto d = detail::as_const(detail::arg_rows<Be>(dov));  // (N, C)
  auto flat = detail::embedding_ids<Be>(idv);            // (N)
  BLIP2_DISPATCH(Be, embedding_backward, be, dtab, d, flat, padding_idx);
}

}  // namespace blip2
