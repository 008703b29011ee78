// blip2/optim/adamw_rule.hpp: the arithmetic of one AdamW element (torch.optim.AdamW's order; the formulas
// are written out in optim/adamw.hpp), shared by adamw::step's host loop and the reference kernel of
// op::adamw_update; the CUDA kernel (src/cuda/adamw_update.cu) repeats it with rounding made explicit, so
// that its results are the same bits.
#pragma once
#include <cmath>

namespace blip2 {

// The constants of one update (one step count t, one learning rate), for one segment of the arena.
struct adamw_step_constants {
  double step_size = 0;        // lr / (1 - b1^t)
  double bc2_sqrt = 1;         // sqrt(1 - b2^t)
  double decay = 1;            // 1 - lr wd where the segment decays, else 1
  double beta2 = 0.98;         // b2
  double one_minus_beta1 = 0.1, one_minus_beta2 = 0.02;
  double eps = 1e-8;
};

// float parameters: the update in float with the constants folded once (a loop the compiler vectorises).
struct adamw_float_constants {
  float b2, w1, w2, inv_bc2, eps, neg_step, decay;
  explicit adamw_float_constants(const adamw_step_constants& k)
      : b2(static_cast<float>(k.beta2)), w1(static_cast<float>(k.one_minus_beta1)),
        w2(static_cast<float>(k.one_minus_beta2)), inv_bc2(static_cast<float>(1.0 / k.bc2_sqrt)),
        eps(static_cast<float>(k.eps)), neg_step(static_cast<float>(-k.step_size)), decay(static_cast<float>(k.decay)) {}
};

inline void adamw_update_element(float& p, float& m, float& v, float g, const adamw_float_constants& k) {
  const float mi = m + k.w1 * (g - m);
  const float vi = v * k.b2 + k.w2 * g * g;
  m = mi;
  v = vi;
  p = p * k.decay + k.neg_step * mi / (std::sqrt(vi) * k.inv_bc2 + k.eps);
}

// Any other T (double): the arithmetic in double, rounded to T where p, m, v are stored; the update reads
// m and v back as stored.
template <class T>
void adamw_update_element(T& p, T& m, T& v, T g, const adamw_step_constants& k) {
  const double gi = static_cast<double>(g);
  const double pi = static_cast<double>(p) * k.decay;
  const double mi = static_cast<double>(m);
  m = static_cast<T>(mi + k.one_minus_beta1 * (gi - mi));
  v = static_cast<T>(static_cast<double>(v) * k.beta2 + k.one_minus_beta2 * gi * gi);
  const double denom = std::sqrt(static_cast<double>(v)) / k.bc2_sqrt + k.eps;
  p = static_cast<T>(pi + (-k.step_size * static_cast<double>(m)) / denom);
}

}  // namespace blip2
