// blip2/train/stage2_trainer.hpp: BLIP-2's stage-2 optimisation step with a frozen OPT: the LM loss of
// one or more micro-batches (models/blip2_opt/stage2.hpp), their gradients averaged, clipped by their
// global norm, then AdamW on the Q-Former (query_tokens included) and the projection. The decoder and
// the image encoder are frozen and get no optimiser state.
//
// Choices, with their reasons:
//   - the frozen decoder runs without dropout. LAVIS leaves OPT's dropout on during stage 2 only because
//     runner.train() reaches the frozen module too; the decoder was trained and is evaluated without it,
//     and a deterministic step is what tests and resumed runs need. The Q-Former runs without dropout
//     too for now (LAVIS keeps its 0.1): stage2_forward has no training switch yet.
//   - weight decay by blip2's rule (optim/adamw.hpp: no decay for LayerNorms, biases and query_tokens),
//     the stage-1 demo's rule, and for the projection decay of its weight only. LAVIS's own rule decays
//     query_tokens (a 3-d tensor); pass another adamw if that matters to an experiment.
//   - vision_model.post_layernorm (LAVIS's ln_vision, trained in LAVIS's stage 2) stays frozen with the
//     image encoder here, as issue 13's list of trainable tensors has it.
//   - accumulation: the loss of each micro-batch is a mean over its counted tokens; the step averages the
//     micro-batches' gradients (equal weight each, as gradient accumulation over equal micro-batches does).
//   - data parallel (step with a communicator, dist/communicator.hpp): each rank averages its own
//     micro-batches, then average_gradients averages the ranks (equal weight each, as torch's DDP does and
//     LAVIS's stage 2 therefore does), before the clipping; the reported loss is the ranks' mean. So W ranks
//     with k micro-batches each take the step one process takes with the W k micro-batches, to rounding.
//     Stage 2 has no objective that couples the ranks' examples (the LM loss is per caption), so nothing
//     else crosses between ranks. Every rank makes the same update; rank 0 writes checkpoints.
//   - checkpoints: io/stage2_checkpoint.hpp saves the Q-Former, the projection and both optimisers (moments,
//     step counts, hyper-parameters) with the step and RNG state, and records the frozen decoder's
//     configuration instead of its weights; loading into a freshly loaded model and a new trainer resumes
//     bitwise. The trainer's other member, its stage2_state, is workspace rebuilt by every step.
#pragma once
#include <cmath>
#include <span>
#include <vector>

#include "blip2/dist/average_gradients.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"

namespace blip2 {

// One micro-batch: image_embeds (B, N, E), input_ids / attention_mask / labels (B, T), host memory.
template <class T>
struct stage2_batch {
  tensor_view<const T, 3> image_embeds;
  tensor_view<const index_t, 2> input_ids, attention_mask, labels;
};

struct stage2_step_result {
  double loss = 0;       // mean over the micro-batches
  double grad_norm = 0;  // before clipping
};

template <class T>
class stage2_trainer {
 public:
  stage2_trainer(blip2_opt_model<T>& m, adamw_options options = {})
      : qformer_(static_cast<index_t>(m.qformer.parameters().size()), options, decay_groups(m.qformer)),
        projection_(m.projection.parameter_view().size(), options,
                    {{"language_projection.weight", 0, m.projection.w.weight.size(), true},
                     {"language_projection.bias", m.projection.w.weight.size(), m.projection.w.bias.size(), false}}) {}

  // One optimisation step over the micro-batches at learning rate lr; clip > 0 clips the global norm.
  template <backend Be>
  stage2_step_result step(Be& be, blip2_opt_model<T>& m, std::span<const stage2_batch<T>> micro, double lr,
                          double clip = 1.0) {
    single_process_communicator one;
    return step(be, one, m, micro, lr, clip);
  }

  // The same over the ranks of comm: each rank passes its own micro-batches (see "data parallel" above).
  template <backend Be, communicator Comm>
  stage2_step_result step(Be& be, Comm& comm, blip2_opt_model<T>& m, std::span<const stage2_batch<T>> micro, double lr,
                          double clip = 1.0) {
    BLIP2_CHECK(!micro.empty(), value_error, "stage2_trainer::step: no micro-batch");
    m.zero_grad(be);
    stage2_step_result r;
    for (const auto& b : micro) {
      r.loss += static_cast<double>(stage2_forward(be, m, state_, b.image_embeds, b.input_ids, b.attention_mask, b.labels));
      stage2_backward(be, m, state_);
    }
    const double n = static_cast<double>(micro.size());
    r.loss /= n;
    auto gq = m.qformer.gradients();
    auto gp = std::span<T>(m.projection.gradient_view().data(), static_cast<std::size_t>(m.projection.gradient_view().size()));
    if (micro.size() > 1) scale_grad(gq, 1.0 / n), scale_grad(gp, 1.0 / n);
    if (comm.size() > 1) {  // the ranks' mean: gradients and loss
      average_gradients(comm, gq);
      average_gradients(comm, gp);
      double loss = r.loss;
      comm.all_reduce_sum(std::span<double>(&loss, 1));
      r.loss = loss / comm.size();
    }
    const double nq = grad_norm(gq), np = grad_norm(gp);
    r.grad_norm = std::sqrt(nq * nq + np * np);
    BLIP2_CHECK(std::isfinite(r.loss) && std::isfinite(r.grad_norm), value_error, "stage2_trainer::step: loss ", r.loss,
                ", gradient norm ", r.grad_norm, ": not finite, the step is not taken");
    if (clip > 0) {
      const double f = clip / (r.grad_norm + 1e-6);  // torch's clip_grad_norm_, over both arenas
      if (f < 1) scale_grad(gq, f), scale_grad(gp, f);
    }
    auto pp = std::span<T>(m.projection.parameter_view().data(), static_cast<std::size_t>(m.projection.parameter_view().size()));
    qformer_.step(m.qformer.parameters(), std::span<const T>(gq), lr);
    projection_.step(pp, std::span<const T>(gp), lr);
    return r;
  }

  // The optimisers: the Q-Former's (its whole arena, query_tokens included, decay_groups) and the
  // projection's (language_projection.weight decayed, .bias not). io/stage2_checkpoint.hpp saves and
  // restores them through these.
  const adamw<T>& qformer_optimizer() const { return qformer_; }
  const adamw<T>& projection_optimizer() const { return projection_; }
  adamw<T>& qformer_optimizer() { return qformer_; }
  adamw<T>& projection_optimizer() { return projection_; }

 private:
  adamw<T> qformer_, projection_;
  stage2_state<T> state_;
};

}  // namespace blip2
