// blip2/loss/stage1_loss.hpp: the weighted sum of BLIP-2's stage-1 objectives, so that an ablation can switch
// any of them off.
//
//   total = w_itc loss_itc + w_itm loss_itm + w_itg loss_itg        (LAVIS: all weights 1)
//   backward: dloss_x = w_x dtotal, the dloss each objective's backward takes.
// A weight of 0 switches its objective off: the term is left out of the sum (so a loss that was not computed,
// or is NaN, does not leak in) and its backward need not run. ITM's hard-negative sampling still needs
// ITC's similarities (the forward), even when w_itc = 0.
#pragma once
#include <cmath>

#include "blip2/core/errors.hpp"

namespace blip2 {

struct stage1_loss_weights {
  double itc = 1.0;
  double itm = 1.0;
  double itg = 1.0;

  // Each weight finite and >= 0 (value_error otherwise).
  void validate() const {
    for (double w : {itc, itm, itg})
      BLIP2_CHECK(std::isfinite(w) && w >= 0, value_error, "stage1_loss_weights: weights {itc ", itc, ", itm ", itm,
                  ", itg ", itg, "} must be finite and >= 0");
  }
};

// w_itc itc + w_itm itm + w_itg itg, leaving out the terms whose weight is 0.
template <class T>
T stage1_total(const stage1_loss_weights& w, T itc, T itm, T itg) {
  w.validate();
  double total = 0;
  if (w.itc != 0) total += w.itc * static_cast<double>(itc);
  if (w.itm != 0) total += w.itm * static_cast<double>(itm);
  if (w.itg != 0) total += w.itg * static_cast<double>(itg);
  return static_cast<T>(total);
}

// The gradient of each objective's loss from the gradient of the total.
struct stage1_dlosses {
  double itc = 0, itm = 0, itg = 0;
};
inline stage1_dlosses stage1_backward(const stage1_loss_weights& w, double dtotal = 1.0) {
  w.validate();
  return {w.itc * dtotal, w.itm * dtotal, w.itg * dtotal};
}

}  // namespace blip2
