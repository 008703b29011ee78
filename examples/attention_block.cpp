// attention_block: one BLIP-2 Q-Former block, composed from blip2 ops, on two backends.
//
// What it teaches:
//   - how a Q-Former layer is built from the public ops: linear, attention, axpy (residual), layer_norm,
//     copy (a layout change), gelu; every call takes the backend first, then outputs, then inputs;
//   - the backend is a value: the same templated block runs on blip2::onednn_backend (float) and on
//     blip2::reference_backend (double, the oracle), and the two answers are compared;
//   - caches: forward fills structs of views (attention_cache{probs}, layer_norm_cache{mean, rstd}) with
//     what a backward pass would need; here we read the attention probabilities to look at the mask;
//   - mask policies: self-attention over [queries ; text] under multimodal_causal_mask{Q} (ITG's mask)
//     with the text padding, cross-attention to the image under bidirectional.
// Sizes are BLIP-2's: C = 768, NH = 12, FFN 3072, Q = 32 queries, N = 257 image tokens of width E = 1408
// (random, seeded, standing in for the frozen EVA ViT-g); weights are random (std 0.02, LayerNorm 1 / 0).
// Dropout is off (p = 0): this is an inference forward pass.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>

#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/models/qformer/masks.hpp"
#include "blip2/nn/attention.hpp"
#include "blip2/nn/axpy.hpp"
#include "blip2/nn/copy.hpp"
#include "blip2/nn/gelu.hpp"
#include "blip2/nn/layer_norm.hpp"
#include "blip2/nn/linear.hpp"

using namespace blip2;

// B images, Q queries, T text tokens (caption lengths 8 and 5), C hidden, NH heads, F FFN width,
// N image tokens of width E; L = Q + T is the self-attention sequence.
constexpr index_t B = 2, Q = 32, T = 8, L = Q + T, C = 768, NH = 12, F = 3072, N = 257, E = 1408;
constexpr index_t caption_len[B] = {8, 5};
constexpr double ln_eps = 1e-12;

// Normal(0, std) numbers from the counter-based RNG (Box-Muller), rounded to float so that the float and
// the double run see the same values.
template <class Scalar, std::size_t R>
host_tensor<Scalar, R> randn(const extents_t<R>& shape, std::uint64_t seed, double std) {
  host_tensor<Scalar, R> t(shape);
  for (index_t i = 0; i < t.size(); ++i) {
    const double u1 = 1.0 - uniform_double(seed, 2 * i), u2 = uniform_double(seed, 2 * i + 1);
    t[i] = static_cast<Scalar>(static_cast<float>(std * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2)));
  }
  return t;
}

template <class S>
struct dense {  // nn.Linear: weight (out, in), bias (out)
  host_tensor<S, 2> w;
  host_tensor<S, 1> b;
  dense(index_t out, index_t in, std::uint64_t seed) : w(randn<S, 2>({out, in}, seed, 0.02)), b({out}) {}
};
template <class S>
struct norm {  // LayerNorm: weight 1, bias 0
  host_tensor<S, 1> w{{C}, S(1)}, b{{C}};
};
template <class S>
struct block_weights {  // Hugging Face names: attention.attention.{query,key,value}, attention.output.dense, ...
  dense<S> q{C, C, 1}, k{C, C, 2}, v{C, C, 3}, o{C, C, 4};            // self-attention
  dense<S> cq{C, C, 5}, ck{C, E, 6}, cv{C, E, 7}, co{C, C, 8};        // crossattention: keys/values from E
  dense<S> fc1{F, C, 9}, fc2{C, F, 10};                               // intermediate_query, output_query
  norm<S> ln_self, ln_cross, ln_ffn;
};

template <class S>
struct block_result {
  host_tensor<S, 3> h{{B, L, C}};       // after self-attention, every position (text would go on to its FFN)
  host_tensor<S, 4> probs{{B, NH, L, L}};  // self-attention probabilities (the attention cache)
  host_tensor<S, 3> y{{B, Q, C}};       // the queries' output of the block
};

// One Q-Former layer with cross-attention (layer 0, 2, ...), for the query positions' output.
template <class S, class Be>
block_result<S> qformer_block(Be& be, const block_weights<S>& w, const host_tensor<S, 3>& x,
                              const host_tensor<S, 3>& image, const host_tensor<S, 2>& key_padding) {
  // ---- self-attention over [queries ; text], multimodal-causal, padded text keys masked ----
  block_result<S> res;
  host_tensor<S, 3> q({B, L, C}), k({B, L, C}), v({B, L, C}), ctx({B, L, C}), a({B, L, C});
  linear_forward(be, q, x, w.q.w, w.q.b);  // (B, L, C)
  linear_forward(be, k, x, w.k.w, w.k.b);
  linear_forward(be, v, x, w.v.w, w.v.b);
  attention_forward(be, ctx, attention_cache<S>{res.probs.view()}, q, k, v, NH, multimodal_causal_mask{Q},
                    key_padding);                                      // ctx (B, L, C)
  linear_forward(be, a, ctx, w.o.w, w.o.b);                            // a = dense(ctx)   (B, L, C)
  axpy(be, a, x);                                                      // a += x           (residual)
  host_tensor<S, 1> mean1({B * L}), rstd1({B * L});
  layer_norm_forward(be, res.h, layer_norm_cache<S>{mean1.view(), rstd1.view()}, a, w.ln_self.w, w.ln_self.b, ln_eps);

  // ---- cross-attention: only the Q query positions look at the N image tokens ----
  host_tensor<S, 3> hq({B, Q, C});                                     // dense copy of h[:, :Q]
  copy(be, hq, tensor_view<const S, 3>(res.h.data(), {B, Q, C}, {L * C, C, 1}));  // strided view of h
  host_tensor<S, 3> cq({B, Q, C}), ck({B, N, C}), cv({B, N, C}), cctx({B, Q, C}), c({B, Q, C}), h2({B, Q, C});
  linear_forward(be, cq, hq, w.cq.w, w.cq.b);                          // (B, Q, C)
  linear_forward(be, ck, image, w.ck.w, w.ck.b);                       // (B, N, E) -> (B, N, C)
  linear_forward(be, cv, image, w.cv.w, w.cv.b);
  host_tensor<S, 4> cprobs({B, NH, Q, N});                             // cross-attention cache
  attention_forward(be, cctx, attention_cache<S>{cprobs.view()}, cq, ck, cv, NH, bidirectional{}, no_padding);
  linear_forward(be, c, cctx, w.co.w, w.co.b);                         // (B, Q, C)
  axpy(be, c, hq);                                                     // residual
  host_tensor<S, 1> mean2({B * Q}), rstd2({B * Q});
  layer_norm_forward(be, h2, layer_norm_cache<S>{mean2.view(), rstd2.view()}, c, w.ln_cross.w, w.ln_cross.b, ln_eps);

  // ---- the queries' FFN (text positions would take the separate text FFN, not shown) ----
  host_tensor<S, 3> f1({B, Q, F}), g({B, Q, F}), f2({B, Q, C});
  linear_forward(be, f1, h2, w.fc1.w, w.fc1.b);                        // (B, Q, F)
  gelu_forward(be, g, f1);                                             // exact erf GELU
  linear_forward(be, f2, g, w.fc2.w, w.fc2.b);                         // (B, Q, C)
  axpy(be, f2, h2);                                                    // residual
  host_tensor<S, 1> mean3({B * Q}), rstd3({B * Q});
  layer_norm_forward(be, res.y, layer_norm_cache<S>{mean3.view(), rstd3.view()}, f2, w.ln_ffn.w, w.ln_ffn.b, ln_eps);
  return res;
}

// Entropy (nats) of one probability row and how many keys get a non-zero probability.
template <class S>
void describe_row(const char* what, const host_tensor<S, 4>& p, index_t b, index_t t) {
  double h = 0;
  int nonzero = 0;
  for (index_t s = 0; s < L; ++s)
    if (const double x = p(b, index_t{0}, t, s); x > 0) h -= x * std::log(x), ++nonzero;
  std::printf("  %-34s entropy %.4f nats, %2d keys with p > 0 (ln %d = %.4f)\n", what, h, nonzero, nonzero,
              std::log(double(nonzero)));
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main() {
  // Inputs: embeddings x of [queries ; text] (B, L, C), image features (B, N, E), text padding (B, L).
  auto x = randn<float, 3>({B, L, C}, 100, 1.0);
  auto image = randn<float, 3>({B, N, E}, 101, 1.0);
  host_tensor<float, 2> pad({B, L}, 1.0f);  // 1 = keep; queries are never padded
  for (index_t b = 0; b < B; ++b)
    for (index_t t = caption_len[b]; t < T; ++t) pad(b, Q + t) = 0.0f;

  onednn_backend dnn;  // owns an engine, a stream and a primitive cache
  block_weights<float> wf;
  block_result<float> out;
  const double cold = seconds([&] { out = qformer_block(dnn, wf, x, image, pad); });  // creates primitives
  const double warm = seconds([&] { out = qformer_block(dnn, wf, x, image, pad); });  // reuses them

  // The same block on the reference backend, in double: the same seeds give the same (float) values.
  reference_backend ref;
  block_weights<double> wd;
  auto xd = randn<double, 3>({B, L, C}, 100, 1.0);
  auto imaged = randn<double, 3>({B, N, E}, 101, 1.0);
  host_tensor<double, 2> padd({B, L});
  for (index_t i = 0; i < pad.size(); ++i) padd[i] = pad[i];
  block_result<double> outd;
  const double tref = seconds([&] { outd = qformer_block(ref, wd, xd, imaged, padd); });

  std::printf("BLIP-2 Q-Former block (layer 0: self-attention, cross-attention, query FFN)\n");
  std::printf("  x (B, Q+T, C) = (%ld, %ld, %ld), image (B, N, E) = (%ld, %ld, %ld), captions of %ld and %ld tokens\n",
              B, L, C, B, N, E, caption_len[0], caption_len[1]);
  std::printf("  output y (B, Q, C) = (%ld, %ld, %ld)\n", out.y.extent(0), out.y.extent(1), out.y.extent(2));
  double sum = 0, sq = 0;
  for (index_t i = 0; i < out.y.size(); ++i) sum += out.y[i], sq += double(out.y[i]) * out.y[i];
  const double mean = sum / out.y.size();
  std::printf("  y: mean %.3e, std %.6f (LayerNorm with weight 1, bias 0)\n", mean,
              std::sqrt(sq / out.y.size() - mean * mean));

  // The mask at work, read from the self-attention cache (oneDNN run).
  std::printf("self-attention probabilities (B, NH, L, L), head 0:\n");
  describe_row("query 0 of image 0:", out.probs, 0, 0);
  describe_row("text token 0 of image 0:", out.probs, 0, Q);
  describe_row("text token 7 of image 0:", out.probs, 0, Q + 7);
  describe_row("text token 7 of image 1 (padded):", out.probs, 1, Q + 7);
  double on_text = 0, on_future = 0, on_pad = 0;  // largest mass any row puts on keys it must not see
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < NH; ++h)
      for (index_t t = 0; t < L; ++t) {
        double text = 0, future = 0, padded = 0;
        for (index_t s = 0; s < L; ++s) {
          const double p = out.probs(b, h, t, s);
          if (s >= Q) text += p;
          if (t >= Q && s > t) future += p;
          if (pad(b, s) == 0.0f) padded += p;
        }
        if (t < Q) on_text = std::max(on_text, text);
        else on_future = std::max(on_future, future);
        on_pad = std::max(on_pad, padded);
      }
  std::printf("  largest mass a query row puts on text keys:           %g\n", on_text);
  std::printf("  largest mass a text row puts on future text positions: %g\n", on_future);
  std::printf("  largest mass any row puts on padded keys:              %g\n", on_pad);

  // Backends compared on h (every position: the text rows carry the causal mask and the padding) and y.
  // Both are LayerNorm-ed (order-1 values): float rounding through the chain of matmuls (K up to 3072) and
  // LayerNorms leaves about 1e-6 here, while a wrong mask or padding moves them by 1e-2 or more (tried);
  // 1e-4 sits two decades from each.
  constexpr double tol = 1e-4;
  auto max_diff = [](const auto& a, const auto& b) {
    double d = 0;
    for (index_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - double(b[i])));
    return d;
  };
  const double dh = max_diff(out.h, outd.h), dy = max_diff(out.y, outd.y), dp = max_diff(out.probs, outd.probs);
  std::printf("onednn (float) vs reference (double), max abs difference:\n");
  std::printf("  h %.3e, y %.3e (tolerance %.0e); attention probabilities %.3e\n", dh, dy, tol, dp);
  std::printf("wall time: onednn %.1f ms first call (creates %zu primitives), %.1f ms second; reference (double) %.1f ms\n",
              cold * 1e3, dnn.cached_primitives(), warm * 1e3, tref * 1e3);
  if (!(dh <= tol && dy <= tol)) {
    std::printf("FAIL: the backends disagree by more than %.0e\n", tol);
    return 1;
  }
  std::printf("OK: the backends agree\n");
  return 0;
}
