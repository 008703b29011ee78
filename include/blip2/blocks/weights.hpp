// blip2/blocks/weights.hpp: the parameter structs the blocks read, shared by every model.
//
// Dimensions: N output features, K input features, C hidden, F feed-forward width.
// Each is a struct of views (llm.c style): the same type holds a model's parameters and, over a second
// arena of the same layout, their gradients. A model names them after its checkpoint (the Q-Former's
// `attention.output.dense`, the ViT's `self_attn.projection`, OPT's `out_proj` are all `dense` here).
#pragma once
#include "blip2/core/bfloat16.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// weight_bf16: the same matrix stored in bfloat16 for a frozen model's inference (blocks/apply_linear.hpp
// reads it instead of weight when it is set; backward needs weight).
template <class T, memory_space S = host_space>
struct linear_weights {
  tensor_view<T, 2, S> weight;                    // (N, K)
  tensor_view<T, 1, S> bias;                      // (N), or empty: no bias
  tensor_view<const bfloat16, 2, S> weight_bf16;  // (N, K), or empty
};

template <class T, memory_space S = host_space>
struct layer_norm_weights {
  tensor_view<T, 1, S> weight;  // (C)
  tensor_view<T, 1, S> bias;    // (C)
};

// Multi-head attention: q, k, v projections, the output projection (dense) and the LayerNorm that is
// applied before (pre-LN: to the block's input) or after (post-LN: to the residual sum). A checkpoint that
// stores q, k, v as one (3C, C) tensor (the ViT) gives views of its three row blocks.
template <class T, memory_space S = host_space>
struct attention_weights {
  linear_weights<T, S> query, key, value;  // (C, C); key/value (C, E) in cross-attention over width E
  linear_weights<T, S> dense;              // (C, C)
  layer_norm_weights<T, S> norm;           // (C)
};

// Feed-forward: dense C -> F, activation, dense F -> C, with its LayerNorm (pre or post, as attention's).
template <class T, memory_space S = host_space>
struct feed_forward_weights {
  linear_weights<T, S> intermediate;  // (F, C)
  linear_weights<T, S> output;        // (C, F)
  layer_norm_weights<T, S> norm;      // (C)
};

}  // namespace blip2
