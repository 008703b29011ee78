// blip2/backend/reference/cross_entropy.hpp: softmax cross-entropy kernels of the reference backend.
// Dimensions: R rows, V classes. Arguments (targets, smoothing) are checked by the public op (blip2::cross_entropy_*).
#pragma once
#include <cmath>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

namespace detail {
// The loss of one counted row from its log-sum-exp, its target logit and the sum of its logits:
// (1 - eps) (lse - z[t]) + eps mean_c (lse - z[c]). eps == 0 skips the smoothing term, so an -inf
// logit elsewhere in the row (a masked class) does not turn the loss into NaN.
template <class T>
T cross_entropy_row(T lse, T target_logit, T sum_logits, index_t V, T eps) {
  const T nll = lse - target_logit;
  if (eps == T(0)) return nll;
  return (T(1) - eps) * nll + eps * (lse - sum_logits / static_cast<T>(V));
}

// loss = sum of the row losses / count, in row order (deterministic); 0 when no row counts.
template <class T>
void cross_entropy_mean(tensor_view<T, 1> loss, tensor_view<const T, 1> row_loss,
                        tensor_view<const index_t, 1> targets, tensor_view<index_t, 1> count, index_t ignore_index) {
  T sum = 0;
  index_t n = 0;
  for (index_t r = 0; r < row_loss.extent(0); ++r)
    if (targets(r) != ignore_index) {
      sum += row_loss(r);
      ++n;
    }
  count(0) = n;
  loss(0) = n > 0 ? sum / static_cast<T>(n) : T(0);
}
}  // namespace detail

template <>
struct kernel<reference_backend, op::cross_entropy_forward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 1> loss, tensor_view<T, 1> row_loss, tensor_view<T, 1> lse,
                  tensor_view<index_t, 1> count, tensor_view<const T, 2> logits, tensor_view<const index_t, 1> targets,
                  T smoothing, index_t ignore_index) {
    const index_t R = logits.extent(0), V = logits.extent(1);
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      // stable log-sum-exp: m + log sum exp(z - m)
      T m = logits(r, 0);
      for (index_t c = 1; c < V; ++c) m = logits(r, c) > m ? logits(r, c) : m;
      T s = 0, sum_z = 0;
      for (index_t c = 0; c < V; ++c) {
        s += std::exp(logits(r, c) - m);
        sum_z += logits(r, c);
      }
      const T l = std::isinf(m) ? m : m + std::log(s);  // a row of -inf (or with +inf) has lse = m
      lse(r) = l;
      const index_t t = targets(r);
      row_loss(r) = t == ignore_index ? T(0) : detail::cross_entropy_row(l, logits(r, t), sum_z, V, smoothing);
    }
    detail::cross_entropy_mean<T>(loss, row_loss, targets, count, ignore_index);
  }
};

template <>
struct kernel<reference_backend, op::cross_entropy_backward> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 2> dlogits, tensor_view<const T, 1> dloss,
                  tensor_view<const T, 2> logits, tensor_view<const index_t, 1> targets, tensor_view<const T, 1> lse,
                  tensor_view<const index_t, 1> count, T smoothing, index_t ignore_index, grad_write mode) {
    const index_t R = logits.extent(0), V = logits.extent(1);
    // forward: loss = sum_r row_loss[r] / count; drow_loss[r] = dloss / count for counted rows
    const T g = count(0) > 0 ? dloss(0) / static_cast<T>(count(0)) : T(0);
    const T off = smoothing / static_cast<T>(V);  // the smoothed target's mass on every class
    const T on = T(1) - smoothing;                 // and the extra mass on the target class
    const bool add = mode == grad_write::accumulate;
    BLIP2_OMP_FOR
    for (index_t r = 0; r < R; ++r) {
      const index_t t = targets(r);
      if (t == ignore_index) {
        // forward: row_loss[r] = 0 (ignored); no gradient
        if (!add)
          for (index_t c = 0; c < V; ++c) dlogits(r, c) = T(0);
        continue;
      }
      // forward: row_loss = lse - sum_c q[c] z[c], q = (1 - eps) onehot(t) + eps / V
      // dz[c] = drow_loss (softmax[c] - q[c]), softmax[c] = exp(z[c] - lse)
      for (index_t c = 0; c < V; ++c) {
        const T q = c == t ? on + off : off;
        const T grad = g * (std::exp(logits(r, c) - lse(r)) - q);
        dlogits(r, c) = (add ? dlogits(r, c) : T(0)) + grad;
      }
    }
  }
};

}  // namespace blip2
