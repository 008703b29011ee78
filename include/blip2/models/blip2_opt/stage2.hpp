// blip2/models/blip2_opt/stage2.hpp: BLIP-2's stage 2 with OPT, forward and backward: the image through
// the Q-Former's queries into a soft prompt, the prompt and text through the decoder, the language-model
// loss (LAVIS Blip2OPT.forward).
//
// Dimensions: B batch, N image tokens, E image width, Q queries, C Q-Former width, T text positions,
//             L = Q + T decoder positions, Dw decoder word width, V embedding rows.
//   soft prompt   P = language_projection(Q-Former(query_tokens, image))           (Q B, Dw)
//   decoder input [P ; embed_tokens(input_ids)], mask [1]*Q ++ attention_mask      (L B, Dw), (B, L)
//   logits        rows of decoder positions Q-1 .. L-1                              ((T + 1) B, V)
//   loss          text token t with labels(b, t) != -100 is predicted from position Q + t - 1: plain
//                 cross-entropy, mean over the counted tokens (0 when none counts)
// Rows are sequence-major (row p B + b). logits() gives row t B + b = the decoder at position Q + t
// for t in [0, T) (what stage2_step writes); the loss reads the rows one position earlier.
// Backward: gradients of query_tokens, the Q-Former and the projection are ADDED to their arenas (zero
// them first: model.zero_grad(be)); the decoder's only when it was made with gradients (a frozen decoder
// computes none). Dropout: none in the Q-Former or the decoder (LAVIS keeps both at 0.1 while training;
// there is no switch for it here yet).
// Errors name the caller's (b, t): shape_error for labels, attention_mask or image_embeds of another
// batch; value_error for an id outside [0, V), a label outside [0, V) that is not -100, a mask value other
// than 0/1, and (from opt_forward) Q + T positions past max_position_embeddings.
#pragma once
#include <span>
#include <vector>

#include "blip2/loss/cross_entropy.hpp"
#include "blip2/models/blip2_opt/model.hpp"
#include "blip2/models/opt/decoder.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/nn/copy_to_host.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
struct soft_prompt_state {
  image_kv_state<T, Space> kv;
  qformer_pass_state<T, Space> pass;  // queries only
};

// out (Q B, Dw) = the soft prompt of image_embeds (B, N, E), sequence-major.
template <backend Be, class T, memory_space Space, class Img>
void soft_prompt_forward(Be& be, const blip2_opt_model<T, Space>& m, soft_prompt_state<T, Space>& st,
                         Img&& image_embeds, tensor_view<T, 2, Space> out, bool training = false,
                         std::uint64_t seed = 0) {
  encode_image_kv(be, m.qformer, st.kv, std::forward<Img>(image_embeds));
  qformer_pass_inputs<T, Space> in;
  in.batch = st.kv.B;
  in.queries = true;
  in.image = &st.kv;
  in.training = training;
  in.seed = seed;
  qformer_forward(be, m.qformer, st.pass, in);
  const index_t QB = m.num_query_tokens() * st.kv.B;
  linear_forward(be, out, detail::as_const(row_range(st.pass.output(), 0, QB)), m.projection.w.weight,
                 m.projection.w.bias);
}

// From d(out) (Q B, Dw): projection, Q-Former and image K/V gradients (added).
template <backend Be, class T, memory_space Space>
void soft_prompt_backward(Be& be, blip2_opt_model<T, Space>& m, soft_prompt_state<T, Space>& st,
                          tensor_view<const T, 2, Space> dout, tensor_view<T, 2, Space> dquery) {
  const index_t QB = m.num_query_tokens() * st.kv.B;
  linear_backward(be, dquery, m.projection.g.weight, m.projection.g.bias, dout,
                  detail::as_const(row_range(st.pass.output(), 0, QB)), m.projection.w.weight);
  qformer_backward(be, m.qformer, st.pass, detail::as_const(dquery));
  encode_image_kv_backward(be, m.qformer, st.kv);
}

template <class T, memory_space Space = host_space>
struct stage2_state {
  index_t B = 0, Q = 0, T_text = 0, L = 0;
  bool ready = false;  // a forward completed: backward may run (a forward that threw leaves it false)
  soft_prompt_state<T, Space> prompt;
  layer_kv_caches<T, Space> cache;
  opt_pass_state<T, Space> llm;
  index_list<Space> text_ids;   // (T B) input_ids, sequence-major
  index_list<Space> targets;    // (T B) labels, sequence-major: row t B + b is predicted by position Q + t - 1
  std::vector<index_t> mask;    // (B, L) host
  tensor_view<T, 2, Space> embeds, dembeds, dout;  // (L B, Dw)
  tensor_view<T, 2, Space> dquery;                 // (Q B, C)
  tensor_view<T, 2, Space> logits_all, dlogits;    // ((T + 1) B, V): positions Q - 1 .. L - 1
  tensor_view<T, 1, Space> loss, dloss, row_loss, lse;
  tensor_view<index_t, 1, Space> count;
  buffer<T, Space> storage;
  buffer<index_t, Space> index_storage;

  // (T B, V): the decoder at positions Q .. L - 1
  tensor_view<T, 2, Space> logits() const { return row_range(logits_all, B, (T_text + 1) * B); }
};

// The loss (also left in st.loss, in the backend's memory) of one batch. input_ids, attention_mask and
// labels are host (B, T); image_embeds (B, N, E) is in the backend's memory.
template <backend Be, class T, memory_space Space, class Img>
T stage2_forward(Be& be, const blip2_opt_model<T, Space>& m, stage2_state<T, Space>& st, Img&& image_embeds,
                 tensor_view<const index_t, 2> input_ids, tensor_view<const index_t, 2> attention_mask,
                 tensor_view<const index_t, 2> labels) {
  constexpr std::string_view op = "stage2_forward";
  const auto& cfg = m.llm.config();
  const index_t B = input_ids.extent(0), Tn = input_ids.extent(1), Q = m.num_query_tokens(), L = Q + Tn;
  const index_t Dw = cfg.word_embed_proj_dim, V = cfg.vocab_size, C = m.qformer.config().qformer.hidden_size;
  BLIP2_CHECK(B >= 1 && Tn >= 1, shape_error, op, ": input_ids have shape ", shape_string(input_ids),
              "; at least one sequence of one token is needed");
  detail::check_shape(op, "attention_mask", attention_mask, {B, Tn});
  detail::check_shape(op, "labels", labels, {B, Tn});
  const auto image = detail::as_const(detail::arg_view<Be, 3>(image_embeds));  // (B, N, E)
  BLIP2_CHECK(image.extent(0) == B, shape_error, op, ": image_embeds has shape ", shape_string(image), " but input_ids has ",
              B, " rows: one image per text (", image.extent(0), " images for ", B, " texts)");
  st.ready = false;
  st.B = B, st.Q = Q, st.T_text = Tn, st.L = L;
  st.text_ids.host.resize(static_cast<std::size_t>(Tn * B));
  st.targets.host.resize(static_cast<std::size_t>(Tn * B));
  st.mask.assign(static_cast<std::size_t>(B * L), 1);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t) {
      const index_t id = input_ids(b, t);
      BLIP2_CHECK(id >= 0 && id < V, value_error, op, ": input_ids(", b, ", ", t, ") = ", id, " is outside [0, ", V,
                  ") (the decoder's embedding rows)");
      // checked here, in the caller's (b, t): cross_entropy and opt_forward would name their own rows
      const index_t target = labels(b, t), keep = attention_mask(b, t);
      BLIP2_CHECK(target == default_ignore_index || (target >= 0 && target < V), value_error, op, ": labels(", b, ", ",
                  t, ") = ", target, " is outside [0, ", V, ") (the decoder's embedding rows) and is not -100 (not counted)");
      BLIP2_CHECK(keep == 0 || keep == 1, value_error, op, ": attention_mask(", b, ", ", t, ") = ", keep, " is not 0 or 1");
      st.text_ids.host[static_cast<std::size_t>(t * B + b)] = id;
      st.targets.host[static_cast<std::size_t>(t * B + b)] = target;
      st.mask[static_cast<std::size_t>(b * L + Q + t)] = keep;
    }
  st.text_ids.upload(be);
  st.targets.upload(be);
  lay_out(st.storage, [&](auto& a) {
    st.embeds = a.template take<2>({L * B, Dw});
    st.dembeds = a.template take<2>({L * B, Dw});
    st.dout = a.template take<2>({L * B, Dw});
    st.dquery = a.template take<2>({Q * B, C});
    st.logits_all = a.template take<2>({(Tn + 1) * B, V});
    st.dlogits = a.template take<2>({(Tn + 1) * B, V});
    st.loss = a.template take<1>({1});
    st.dloss = a.template take<1>({1});
    st.row_loss = a.template take<1>({Tn * B});
    st.lse = a.template take<1>({Tn * B});
  });
  lay_out(st.index_storage, [&](auto& a) { st.count = a.template take<1>({1}); });

  soft_prompt_forward(be, m, st.prompt, image, row_range(st.embeds, 0, Q * B));
  embedding_forward(be, row_range(st.embeds, Q * B, L * B), st.text_ids.view(), m.llm.w.embed_tokens);
  st.cache.reserve(cfg.num_hidden_layers, B, L, cfg.hidden_size, false);
  opt_forward(be, m.llm, st.llm, st.cache, detail::as_const(st.embeds), tensor_view<const index_t, 2>(st.mask.data(), {B, L}));
  opt_logits(be, m.llm, st.logits_all, detail::as_const(row_range(st.llm.out, (Q - 1) * B, L * B)));
  cross_entropy_forward(be, st.loss, st.row_loss, cross_entropy_cache<T, Space>{st.lse, st.count},
                        detail::as_const(row_range(st.logits_all, 0, Tn * B)), st.targets.view());
  T loss{};
  copy_to_host(be, tensor_view<T, 1>(&loss, {1}), detail::as_const(st.loss));
  st.ready = true;
  return loss;
}

// Gradients of the last stage2_forward's loss (d loss = 1), added into the model's gradient arenas.
template <backend Be, class T, memory_space Space>
void stage2_backward(Be& be, blip2_opt_model<T, Space>& m, stage2_state<T, Space>& st) {
  BLIP2_CHECK(st.ready, value_error, "stage2_backward: no completed stage2_forward to differentiate");
  const index_t B = st.B, Q = st.Q, Tn = st.T_text, L = st.L;
  fill(be, st.dloss, T(1));
  cross_entropy_backward(be, row_range(st.dlogits, 0, Tn * B), detail::as_const(st.dloss),
                         detail::as_const(row_range(st.logits_all, 0, Tn * B)), st.targets.view(),
                         cross_entropy_cache<T, Space>{st.lse, st.count});
  fill(be, row_range(st.dlogits, Tn * B, (Tn + 1) * B), T{});  // the last position predicts nothing
  if (Q > 1) fill(be, row_range(st.dout, 0, (Q - 1) * B), T{});
  opt_logits_backward(be, m.llm, row_range(st.dout, (Q - 1) * B, L * B), detail::as_const(st.dlogits),
                      detail::as_const(row_range(st.llm.out, (Q - 1) * B, L * B)));
  opt_backward(be, m.llm, st.llm, st.cache, detail::as_const(st.dout), st.dembeds);
  if (auto* g = m.llm.gradients_or_null())
    embedding_backward(be, g->embed_tokens, detail::as_const(row_range(st.dembeds, Q * B, L * B)), st.text_ids.view());
  soft_prompt_backward(be, m, st.prompt, detail::as_const(row_range(st.dembeds, 0, Q * B)), st.dquery);
}

}  // namespace blip2
