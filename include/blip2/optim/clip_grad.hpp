// blip2/optim/clip_grad.hpp: gradient norm, clipping, scaling, and gradient accumulation.
//
// clip_grad_norm(grads, max_norm) is torch.nn.utils.clip_grad_norm_(params, max_norm) over one flat
// gradient arena (the global L2 norm of all gradients together):
//   norm = sqrt(sum g^2)                                 accumulated in double
//   coef = max_norm / (norm + 1e-6); if coef < 1: g *= coef   (torch multiplies by min(coef, 1))
//   returns norm (before clipping)
// Note that, as in torch, the gradients are scaled a little already when norm is within 1e-6 below
// max_norm (coef < 1 while norm <= max_norm).
// A non-finite norm (a NaN or an inf in the gradients) is returned as it is and the gradients are left
// untouched (torch, by default, would multiply them by NaN or 0): the caller decides, typically by
// skipping the optimiser step and zeroing the gradients. Check with std::isfinite(norm).
//
// The sum is deterministic: fixed blocks of grad_norm_block elements are summed sequentially (in
// parallel across blocks), then the block sums in order, so the norm has the same bits whatever the
// number of OpenMP threads.
//
// Gradient accumulation (k micro-batches of b examples per optimiser step, for a loss that is a MEAN
// over the batch): the gradient of the mean over k*b examples is the sum over the micro-batches of
// (1/k) x the gradient of each micro-batch's mean. Parameter gradients accumulate (+=) in this library,
// so:
//     grad_accumulation acc{k};
//     for (std::int64_t micro = 0; ; ++micro) {
//       if (acc.begins_step(micro)) model.zero_grad();
//       ...forward; backward with the loss gradient scaled by acc.loss_scale() (= 1/k)...
//       if (acc.ends_step(micro)) {
//         const double norm = clip_grad_norm(model.gradients(), 1.0);
//         if (std::isfinite(norm)) opt.step(model.parameters(), model.gradients(), schedule(micro / k));
//       }
//     }
// Equivalently, backpropagate unscaled losses and call scale_grad(model.gradients(), 1.0 / k) before
// clipping. Either gives the one-batch gradient up to rounding (the sum is taken in another order), so
// the update equals that of one batch of k*b examples up to rounding (tests/test_optim.cpp shows it).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

inline constexpr index_t grad_norm_block = 4096;

// The L2 norm of all elements, accumulated in double, deterministic (see above).
template <class T>
double grad_norm(std::span<const T> grads) {
  const index_t n = static_cast<index_t>(grads.size());
  const index_t blocks = (n + grad_norm_block - 1) / grad_norm_block;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  const T* g = grads.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (index_t b = 0; b < blocks; ++b) {
    const index_t lo = b * grad_norm_block, hi = std::min(n, lo + grad_norm_block);
    double s = 0.0;
    for (index_t i = lo; i < hi; ++i) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
    partial[static_cast<std::size_t>(b)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}
template <class T>
double grad_norm(std::span<T> grads) {
  return grad_norm(std::span<const T>(grads));
}

// grads *= factor (in double, rounded to T).
template <class T>
void scale_grad(std::span<T> grads, double factor) {
  const index_t n = static_cast<index_t>(grads.size());
  T* g = grads.data();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (index_t i = 0; i < n; ++i) g[i] = static_cast<T>(static_cast<double>(g[i]) * factor);
}

// torch.nn.utils.clip_grad_norm_ over the whole arena; returns the norm before clipping. A non-finite
// norm is returned with the gradients untouched. Throws value_error when max_norm is negative or NaN.
template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm) {
  BLIP2_CHECK(max_norm >= 0, value_error, "clip_grad_norm: max_norm = ", max_norm, " must be >= 0");
  const double norm = grad_norm(std::span<const T>(grads));
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grad(grads, coef);
  return norm;
}

// Bookkeeping for k micro-batches per optimiser step (see the pattern at the top of this file).
struct grad_accumulation {
  std::int64_t micro_steps = 1;  // k

  double loss_scale() const { return 1.0 / static_cast<double>(checked()); }
  // Zero the gradients before micro-batch `micro` (0-based, counted over the whole run).
  bool begins_step(std::int64_t micro) const { return micro % checked() == 0; }
  // Clip and step after micro-batch `micro`.
  bool ends_step(std::int64_t micro) const { return micro % checked() == checked() - 1; }

 private:
  std::int64_t checked() const {
    BLIP2_CHECK(micro_steps >= 1, value_error, "grad_accumulation: micro_steps = ", micro_steps, " must be >= 1");
    return micro_steps;
  }
};

}  // namespace blip2
