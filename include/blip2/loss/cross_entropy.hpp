// blip2/loss/cross_entropy.hpp: softmax cross-entropy with label smoothing and an ignore index, mean over
// the rows that count, forward and backward (PyTorch's F.cross_entropy(logits, targets,
// ignore_index=..., label_smoothing=eps), reduction "mean").
//
// Dimensions: R rows (B for ITC and ITM, B T for ITG), V classes (B, 2, or the vocabulary).
//   forward:  lse[r] = log sum_c exp(logits[r, c])          (stable: max subtracted first; cached)
//             row_loss[r] = (1 - eps) (lse[r] - logits[r, t]) + eps mean_c (lse[r] - logits[r, c]),
//                           t = targets[r]; 0 for rows whose target is ignore_index
//             count = number of rows whose target is not ignore_index   (cached)
//             loss = sum_r row_loss[r] / count; 0 when count == 0 (PyTorch returns NaN there: 0 / 0)
//   backward: dlogits[r, c] = dloss / count (softmax[r, c] - (1 - eps) [c == t] - eps / V) for counted
//             rows, 0 for ignored rows; assigned, or added with grad_write::accumulate
// loss and dloss are (1) tensors in the backend's memory space (so a device backend never copies a
// scalar to the host); row_loss is an output for logging and mining, it takes no gradient.
// A target outside [0, V) that is not ignore_index is a value_error naming the row.
#pragma once
#include <type_traits>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

// What backward needs from forward.
template <class T, class Space = host_space>
struct cross_entropy_cache {
  tensor_view<T, 1, Space> lse;          // (R) log-sum-exp of each row of logits
  tensor_view<index_t, 1, Space> count;  // (1) rows that count (target != ignore_index)
};

namespace detail {
template <class Targets>
void check_targets(std::string_view op, const Targets& targets, index_t V, index_t ignore_index) {
  if constexpr (Targets::memory_space_type::host_accessible)  // a device backend checks in its kernel
    for (index_t r = 0; r < targets.extent(0); ++r) {
      const index_t t = targets(r);
      BLIP2_CHECK(t == ignore_index || (t >= 0 && t < V), value_error, op, ": targets(", r, ") = ", t,
                  " is outside [0, V) with V = ", V, " and is not ignore_index (", ignore_index, ")");
    }
}
inline void check_smoothing(std::string_view op, double eps) {
  BLIP2_CHECK(eps >= 0 && eps <= 1, value_error, op, ": label_smoothing = ", eps, " must be in [0, 1]");
}
}  // namespace detail

// The target that marks a row as not counted unless told otherwise: PyTorch's CrossEntropyLoss default,
// which LAVIS's labels use for padding.
inline constexpr index_t default_ignore_index = -100;

template <backend Be, class Loss, class RowLoss, class T, class Logits, class Targets>
void cross_entropy_forward(Be& be, Loss&& loss, RowLoss&& row_loss,
                           cross_entropy_cache<T, typename Be::memory_space> cache, Logits&& logits,
                           Targets&& targets, double label_smoothing = 0.0, index_t ignore_index = default_ignore_index) {
  constexpr std::string_view op = "cross_entropy_forward";
  auto l = detail::arg_view<Be, 1>(loss);                         // (1)
  auto rl = detail::arg_view<Be, 1>(row_loss);                    // (R)
  auto z = detail::as_const(detail::arg_view<Be, 2>(logits));     // (R, V)
  auto t = detail::as_const(detail::arg_view<Be, 1>(targets));    // (R)
  static_assert(std::is_same_v<typename decltype(l)::element_type, T> &&
                    std::is_same_v<typename decltype(rl)::element_type, T> &&
                    std::is_same_v<typename decltype(z)::value_type, T>,
                "cross_entropy_forward: loss, row_loss, logits and cache differ in type");
  static_assert(std::is_same_v<typename decltype(t)::value_type, index_t>,
                "cross_entropy_forward: targets must be int64 (blip2::index_t)");
  const index_t R = z.extent(0), V = z.extent(1);
  detail::check_shape(op, "loss", l, {1});
  detail::check_shape(op, "row_loss", rl, {R});
  detail::check_shape(op, "targets", t, {R});
  detail::check_shape(op, "cache.lse", cache.lse, {R});
  detail::check_shape(op, "cache.count", cache.count, {1});
  BLIP2_CHECK(V >= 1 || R == 0, shape_error, op, ": logits have shape ", shape_string(z), ", no classes");
  detail::check_smoothing(op, label_smoothing);
  detail::check_targets(op, t, V, ignore_index);
  BLIP2_DISPATCH(Be, cross_entropy_forward, be, l, rl, cache.lse, cache.count, z, t, static_cast<T>(label_smoothing),
                 ignore_index);
}

template <backend Be, class DLogits, class DLoss, class Logits, class Targets, class T>
void cross_entropy_backward(Be& be, DLogits&& dlogits, DLoss&& dloss, Logits&& logits, Targets&& targets,
                            cross_entropy_cache<T, typename Be::memory_space> cache, double label_smoothing = 0.0,
                            index_t ignore_index = default_ignore_index, grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "cross_entropy_backward";
  auto dz = detail::arg_view<Be, 2>(dlogits);                     // (R, V)
  auto dl = detail::as_const(detail::arg_view<Be, 1>(dloss));     // (1)
  auto z = detail::as_const(detail::arg_view<Be, 2>(logits));     // (R, V)
  auto t = detail::as_const(detail::arg_view<Be, 1>(targets));    // (R)
  static_assert(std::is_same_v<typename decltype(dz)::element_type, T> &&
                    std::is_same_v<typename decltype(dl)::value_type, T> &&
                    std::is_same_v<typename decltype(z)::value_type, T>,
                "cross_entropy_backward: dlogits, dloss, logits and cache differ in type");
  static_assert(std::is_same_v<typename decltype(t)::value_type, index_t>,
                "cross_entropy_backward: targets must be int64 (blip2::index_t)");
  const index_t R = z.extent(0), V = z.extent(1);
  detail::check_shape(op, "dlogits", dz, {R, V});
  detail::check_shape(op, "dloss", dl, {1});
  detail::check_shape(op, "targets", t, {R});
  detail::check_shape(op, "cache.lse", cache.lse, {R});
  detail::check_shape(op, "cache.count", cache.count, {1});
  detail::check_smoothing(op, label_smoothing);
  detail::check_targets(op, t, V, ignore_index);
  BLIP2_DISPATCH(Be, cross_entropy_backward, be, dz, dl, z, t, detail::as_const(cache.lse),
                 detail::as_const(cache.count), static_cast<T>(label_smoothing), ignore_index, mode);
}

}  // namespace blip2
