// blip2/nn/layer_norm.hpp: LayerNorm over the last axis, forward and backward.
//
// Dimensions: R rows (all leading dimensions of the input, flattened), C channels.
//   forward:  out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), biased variance
//   backward: dinp (assigned, or accumulated with grad_write::accumulate: the residual stream; required),
//             dweight += ..., dbias += ... (each may be an empty view, data() == nullptr: its work is
//             skipped and no scratch is made for it; a frozen layer passes both empty)
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

// What backward needs from forward: per-row mean and reciprocal standard deviation.
template <class T, class Space = host_space>
struct layer_norm_cache {
  tensor_view<T, 1, Space> mean;  // (R)
  tensor_view<T, 1, Space> rstd;  // (R)
};

template <backend Be, class Out, class T, class In, class W, class B>
void layer_norm_forward(Be& be, Out&& out, layer_norm_cache<T, typename Be::memory_space> cache, In&& inp,
                        W&& weight, B&& bias, double eps) {
  constexpr std::string_view op = "layer_norm_forward";
  auto o = detail::arg_rows<Be>(out);                                  // (R, C)
  auto i = detail::as_const(detail::arg_rows<Be>(inp));                // (R, C)
  auto w = detail::as_const(detail::arg_view<Be, 1>(weight));          // (C)
  auto b = detail::as_const(detail::arg_view<Be, 1>(bias));            // (C)
  static_assert(std::is_same_v<typename decltype(o)::element_type, T>, "layer_norm_forward: out and cache differ in type");
  const index_t R = i.extent(0), C = i.extent(1);
  detail::check_shape(op, "out", o, {R, C});
  detail::check_shape(op, "weight", w, {C});
  detail::check_shape(op, "bias", b, {C});
  detail::check_shape(op, "cache.mean", cache.mean, {R});
  detail::check_shape(op, "cache.rstd", cache.rstd, {R});
  BLIP2_CHECK(eps >= 0, value_error, op, ": eps = ", eps, " must be >= 0");
  BLIP2_DISPATCH(Be, layer_norm_forward, be, o, cache.mean, cache.rstd, i, w, b, static_cast<T>(eps));
}

template <backend Be, class DInp, class T, class DW, class DB, class DOut, class In, class W>
void layer_norm_backward(Be& be, DInp&& dinp, DW&& dweight, DB&& dbias, DOut&& dout, In&& inp, W&& weight,
                         layer_norm_cache<T, typename Be::memory_space> cache,
                         grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "layer_norm_backward";
  auto di = detail::arg_rows<Be>(dinp);                                // (R, C)
  auto dw = detail::arg_view<Be, 1>(dweight);                          // (C)
  auto db = detail::arg_view<Be, 1>(dbias);                            // (C)
  auto dout_v = detail::as_const(detail::arg_rows<Be>(dout));          // (R, C)
  auto i = detail::as_const(detail::arg_rows<Be>(inp));                // (R, C)
  auto w = detail::as_const(detail::arg_view<Be, 1>(weight));          // (C)
  const index_t R = i.extent(0), C = i.extent(1);
  BLIP2_CHECK(di.data() != nullptr || R * C == 0, shape_error, op,
              ": dinp is required (only dweight and dbias may be empty views)");
  detail::check_shape(op, "dinp", di, {R, C});
  if (dw.data()) detail::check_shape(op, "dweight", dw, {C});
  if (db.data()) detail::check_shape(op, "dbias", db, {C});
  detail::check_shape(op, "dout", dout_v, {R, C});
  detail::check_shape(op, "weight", w, {C});
  detail::check_shape(op, "cache.mean", cache.mean, {R});
  detail::check_shape(op, "cache.rstd", cache.rstd, {R});
  BLIP2_DISPATCH(Be, layer_norm_backward, be, di, dw, db, dout_v, i, w, detail::as_const(cache.mean),
                 detail::as_const(cache.rstd), mode);
}

}  // namespace blip2
