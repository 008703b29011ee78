// blip2/blip2.hpp: the whole library in one include.
//
// The core (tensor views, concepts, the reference backend, every op, the Q-Former and its heads, the
// ViT, the stage-1 losses, samplers, optimiser and step, retrieval, caption and VQA metrics, text
// generation, the OPT decoder and BLIP-2 OPT's stage 2) needs only C++20.
// (The demo's synthetic world, frozen patch encoder and PNG plot are not the library: examples/support/.)
// Optional parts are included when their dependency is there:
//   oneDNN backend      when compiled with BLIP2_HAS_ONEDNN (link blip2::onednn)
//   io (safetensors, Hugging Face config, checkpoints)   when compiled with BLIP2_HAS_IO (link blip2::io)
//   io/image.hpp (PNG/JPEG, BLIP-2's eval transform)      when compiled with BLIP2_HAS_IMAGE (link blip2::image)
//   io/bert_tokenizer.hpp (BERT WordPiece, LAVIS captions)    always (C++20 only)
//   io/byte_bpe_tokenizer.hpp, io/opt_tokenizer.hpp (GPT-2 byte-level BPE, OPT's specials)  always (C++20 only)
//   Eigen / xtensor adaptors   when their headers are found (link blip2::eigen / blip2::xtensor)
//   dist/mpi_communicator.hpp (data parallelism over MPI)    when compiled with BLIP2_HAS_MPI (link blip2::mpi)
//   CUDA backend        when compiled with BLIP2_HAS_CUDA (link blip2::cuda; its kernels are built by nvcc)
#pragma once

#include "blip2/core/arena.hpp"
#include "blip2/core/buffer.hpp"
#include "blip2/core/check.hpp"
#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/mask_policy.hpp"
#include "blip2/core/memory_space.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/core/rows.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/core/view.hpp"

#include "blip2/backend/backend.hpp"
#include "blip2/backend/reference/reference_backend.hpp"

#include "blip2/nn/attention.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/copy_from_host.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/nn/dropout.hpp"
#include "blip2/nn/embedding.hpp"
#include "blip2/nn/fill.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/l2_normalize.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"
#include "blip2/nn/linear_bf16.hpp"
#include "blip2/nn/matmul.hpp"
#include "blip2/nn/relu.hpp"
#include "blip2/nn/row_max.hpp"
#include "blip2/nn/softmax.hpp"

#include "blip2/blocks/attention_block.hpp"
#include "blip2/blocks/feed_forward_block.hpp"
#include "blip2/blocks/kv_cache.hpp"
#include "blip2/blocks/row_plan.hpp"
#include "blip2/blocks/weights.hpp"

#include "blip2/models/qformer.hpp"

#include "blip2/loss/cross_entropy.hpp"
#include "blip2/loss/itc.hpp"
#include "blip2/loss/itg.hpp"
#include "blip2/loss/itm.hpp"
#include "blip2/loss/stage1_loss.hpp"

#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/mining/fixed_sampler.hpp"
#include "blip2/mining/hardest_sampler.hpp"
#include "blip2/mining/negative_sampler.hpp"
#include "blip2/mining/uniform_sampler.hpp"

#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/optim/schedule.hpp"

#include "blip2/train/csv_log.hpp"
#include "blip2/train/progress.hpp"
#include "blip2/train/stage1_step.hpp"

#include "blip2/dist/average_gradients.hpp"
#include "blip2/dist/communicator.hpp"
#include "blip2/dist/fetch_rows.hpp"
#include "blip2/dist/launch.hpp"
#if defined(BLIP2_HAS_MPI)
#include "blip2/dist/mpi_communicator.hpp"
#endif

// ---- stage 2: the OPT decoder, BLIP-2 OPT (soft prompt, loss, generation), its training pieces ----
#include "blip2/models/opt/config.hpp"
#include "blip2/models/opt/decoder.hpp"
#include "blip2/models/opt/model.hpp"
#include "blip2/models/opt/session.hpp"
#include "blip2/models/opt/weights.hpp"
#include "blip2/models/blip2_opt/generate_text.hpp"
#include "blip2/models/blip2_opt/model.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "blip2/train/lm_step.hpp"
#include "blip2/train/stage2_trainer.hpp"

#include "blip2/eval/bleu.hpp"
#include "blip2/eval/caption_ngrams.hpp"
#include "blip2/eval/cider.hpp"
#include "blip2/eval/rerank_scores.hpp"
#include "blip2/eval/retrieval.hpp"
#include "blip2/eval/vqa_accuracy.hpp"

#include "blip2/generate/generate.hpp"

// The BERT tokenizer and LAVIS captions need only C++20 (their Unicode tables are generated, committed).
#include "blip2/io/bert_tokenizer.hpp"
#include "blip2/io/byte_bpe_tokenizer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/io/bpe_trainer.hpp"

#if defined(BLIP2_HAS_ONEDNN)
#include "blip2/backend/onednn/onednn.hpp"
#endif
#if defined(BLIP2_HAS_CUDA)
#include "blip2/backend/cuda/cuda.hpp"
#endif

#if defined(BLIP2_HAS_IO)
#include "blip2/io/hf_config.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/training_checkpoint.hpp"
#include "blip2/io/checkpoint_files.hpp"
#include "blip2/io/opt_checkpoint.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/save_blip2_opt.hpp"
#include "blip2/io/stage2_checkpoint.hpp"
#endif

#if defined(BLIP2_HAS_IMAGE)
#include "blip2/io/image.hpp"
#endif

// ---- the frozen image encoder (EVA ViT): C++20 only; its checkpoint loader with io, bf16 check with oneDNN ----
#include "blip2/models/vit/config.hpp"
#include "blip2/models/vit/vision_transformer.hpp"
#include "blip2/models/to_space.hpp"
#if defined(BLIP2_HAS_IO)
#include "blip2/io/vision_checkpoint.hpp"
#endif
#if defined(BLIP2_HAS_ONEDNN)
#include "blip2/models/vit/bf16.hpp"
#endif
// ---- end image encoder ----

#if __has_include(<Eigen/Core>) && __has_include(<unsupported/Eigen/CXX11/Tensor>)
#include "blip2/adapt/eigen.hpp"
#endif
#if __has_include(<xtensor/xtensor.hpp>)
#include "blip2/adapt/xtensor.hpp"
#endif
