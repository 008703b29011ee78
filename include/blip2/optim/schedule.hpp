// blip2/optim/schedule.hpp: the learning-rate schedule of BLIP-2: linear warm-up, then cosine decay.
//
// warmup_cosine_schedule gives the learning rate of optimiser update number `step` (0-based: the first
// update uses lr(0)), per STEP:
//   step <  warmup_steps:                lr = warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
//   warmup_steps <= step < total_steps:  lr = min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * s / S)),
//                                        s = step - warmup_steps, S = total_steps - warmup_steps
//   step >= total_steps:                 lr = min_lr
// so lr(0) = warmup_start_lr, lr(warmup_steps) = base_lr, and lr reaches min_lr at step total_steps.
//
// LAVIS (lavis/common/optims.py, "linear_warmup_cosine_lr", used by the BLIP-2 pre-training configs:
// init_lr 1e-4, min_lr 1e-5, warmup_lr 1e-6, warmup_steps 5000, max_epoch 10) differs:
//   - the warm-up happens only in epoch 0, driven by the step within the epoch:
//       lr = min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) * step / max(warmup_steps, 1)),
//     and after it the rest of epoch 0 stays at init_lr (the warm-up is assumed to fit in one epoch);
//   - from epoch 1 on, the cosine is per EPOCH and constant within an epoch:
//       lr = min_lr + (init_lr - min_lr) * 0.5 * (1 + cos(pi * epoch / max_epoch)),
//     so the cosine is measured from step 0 (not from the end of the warm-up) and the last epoch
//     (max_epoch - 1) never reaches min_lr;
//   - warmup_start_lr < 0 (its default, -1) means init_lr: no warm-up at all.
// Ours is the per-step version of the same curve (smooth, reaching min_lr at total_steps);
// lavis_linear_warmup_cosine_lr reproduces LAVIS's exactly, for comparisons and for runs that must
// follow it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

#include "blip2/core/errors.hpp"

namespace blip2 {

struct warmup_cosine_schedule {
  double base_lr = 1e-4;         // reached at the end of the warm-up (LAVIS init_lr)
  double min_lr = 1e-5;          // reached at total_steps
  double warmup_start_lr = 0.0;  // lr(0) (LAVIS warmup_lr; BLIP-2 pre-training uses 1e-6)
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 0;

  // Throws value_error for negative or non-finite rates, warmup_steps < 0, total_steps < warmup_steps.
  void validate() const {
    BLIP2_CHECK(std::isfinite(base_lr) && std::isfinite(min_lr) && std::isfinite(warmup_start_lr) && base_lr >= 0 &&
                    min_lr >= 0 && warmup_start_lr >= 0,
                value_error, "warmup_cosine_schedule: base_lr = ", base_lr, ", min_lr = ", min_lr,
                ", warmup_start_lr = ", warmup_start_lr, " must be finite and >= 0");
    BLIP2_CHECK(warmup_steps >= 0 && total_steps >= warmup_steps, value_error, "warmup_cosine_schedule: warmup_steps = ",
                warmup_steps, " and total_steps = ", total_steps, " need 0 <= warmup_steps <= total_steps");
  }

  // The learning rate of update number `step` (0-based). Throws value_error for step < 0.
  double operator()(std::int64_t step) const {
    validate();
    BLIP2_CHECK(step >= 0, value_error, "warmup_cosine_schedule: step = ", step, " must be >= 0");
    if (step < warmup_steps)
      return warmup_start_lr +
             (base_lr - warmup_start_lr) * static_cast<double>(step) / static_cast<double>(warmup_steps);
    if (step >= total_steps) return min_lr;
    const double progress =
        static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
};

// LAVIS's LinearWarmupCosineLRScheduler.step(cur_epoch, cur_step), exactly: the lr LAVIS sets before
// iteration `step_in_epoch` of epoch `epoch` (both 0-based). warmup_start_lr < 0 means init_lr.
inline double lavis_linear_warmup_cosine_lr(double init_lr, double min_lr, double warmup_start_lr,
                                            std::int64_t warmup_steps, std::int64_t max_epoch, std::int64_t epoch,
                                            std::int64_t step_in_epoch) {
  BLIP2_CHECK(max_epoch > 0 && epoch >= 0 && step_in_epoch >= 0, value_error,
              "lavis_linear_warmup_cosine_lr: max_epoch = ", max_epoch, ", epoch = ", epoch, ", step = ", step_in_epoch,
              ": need max_epoch > 0, epoch >= 0, step >= 0");
  const double start = warmup_start_lr >= 0 ? warmup_start_lr : init_lr;
  if (epoch == 0)
    return std::min(init_lr, start + (init_lr - start) * static_cast<double>(step_in_epoch) /
                                         static_cast<double>(std::max<std::int64_t>(warmup_steps, 1)));
  return (init_lr - min_lr) * 0.5 *
             (1.0 + std::cos(std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(max_epoch))) +
         min_lr;
}

}  // namespace blip2
