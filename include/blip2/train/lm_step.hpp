// blip2/train/lm_step.hpp: next-token training of an OPT decoder on text alone, forward and backward:
// how the stage-2 demo pretrains its small language model before freezing it.
//
// Dimensions: B sequences, T positions, C hidden, Dw word width, V embedding rows.
//   input   embed_tokens(ids) (T B, Dw), sequence-major, under the mask (B, T) (padding: 0)
//   logits  the decoder's rows of positions 0 .. T-2                     ((T - 1) B, V)
//   loss    row t B + b predicts ids(b, t + 1) where mask(b, t) = mask(b, t + 1) = 1: plain cross-entropy,
//           mean over the counted tokens (OPTForCausalLM's shifted loss with pads as -100)
// Backward adds into the decoder's gradient arena (it must be made with opt_storage::with_gradients):
// embed_tokens gets both the lookup's and the tied lm_head's terms. opt_decay_groups gives AdamW's
// weight-decay segments by name (LAVIS's rule: no decay for 1-d tensors and biases).
#pragma once
#include <string>
#include <vector>

#include "blip2/loss/cross_entropy.hpp"
#include "blip2/models/opt/decoder.hpp"
#include "blip2/nn/copy_to_host.hpp"
#include "blip2/optim/adamw.hpp"

namespace blip2 {

template <class T, memory_space Space = host_space>
struct lm_state {
  index_t B = 0, T_text = 0;
  bool ready = false;  // a forward completed: backward may run
  layer_kv_caches<T, Space> cache;
  opt_pass_state<T, Space> pass;
  index_list<Space> ids, targets;  // (T B) ids; ((T - 1) B) targets
  std::vector<index_t> mask;       // (B, T)
  tensor_view<T, 2, Space> embeds, dout, dembeds;  // (T B, Dw)
  tensor_view<T, 2, Space> logits, dlogits;        // ((T - 1) B, V)
  tensor_view<T, 1, Space> loss, dloss, row_loss, lse;
  tensor_view<index_t, 1, Space> count;
  buffer<T, Space> storage;
  buffer<index_t, Space> index_storage;
};

// The next-token loss of ids (B, T) under mask (B, T), both host; also left in st.loss.
template <backend Be, class T, memory_space Space>
T lm_forward(Be& be, const opt_model<T, Space>& m, lm_state<T, Space>& st, tensor_view<const index_t, 2> ids,
             tensor_view<const index_t, 2> mask) {
  constexpr std::string_view op = "lm_forward";
  const auto& c = m.config();
  const index_t B = ids.extent(0), Tn = ids.extent(1), V = c.vocab_size, Dw = c.word_embed_proj_dim;
  BLIP2_CHECK(B >= 1 && Tn >= 2, shape_error, op, ": ids have shape ", shape_string(ids),
              "; next-token training needs B >= 1 and T >= 2");
  detail::check_shape(op, "mask", mask, {B, Tn});
  st.ready = false;
  st.B = B, st.T_text = Tn;
  st.ids.host.resize(static_cast<std::size_t>(Tn * B));
  st.targets.host.resize(static_cast<std::size_t>((Tn - 1) * B));
  st.mask.resize(static_cast<std::size_t>(B * Tn));
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t) {
      const index_t id = ids(b, t);
      BLIP2_CHECK(id >= 0 && id < V, value_error, op, ": ids(", b, ", ", t, ") = ", id, " is outside [0, ", V, ")");
      st.ids.host[static_cast<std::size_t>(t * B + b)] = id;
      st.mask[static_cast<std::size_t>(b * Tn + t)] = mask(b, t);
      // a target counts when it and the position predicting it are real tokens (a left pad predicts nothing)
      if (t > 0)
        st.targets.host[static_cast<std::size_t>((t - 1) * B + b)] =
            mask(b, t) && mask(b, t - 1) ? id : default_ignore_index;
    }
  st.ids.upload(be);
  st.targets.upload(be);
  const index_t R = (Tn - 1) * B;
  lay_out(st.storage, [&](auto& a) {
    st.embeds = a.template take<2>({Tn * B, Dw});
    st.dout = a.template take<2>({Tn * B, Dw});
    st.dembeds = a.template take<2>({Tn * B, Dw});
    st.logits = a.template take<2>({R, V});
    st.dlogits = a.template take<2>({R, V});
    st.loss = a.template take<1>({1});
    st.dloss = a.template take<1>({1});
    st.row_loss = a.template take<1>({R});
    st.lse = a.template take<1>({R});
  });
  lay_out(st.index_storage, [&](auto& a) { st.count = a.template take<1>({1}); });
  embedding_forward(be, st.embeds, st.ids.view(), m.w.embed_tokens);
  st.cache.reserve(c.num_hidden_layers, B, Tn, c.hidden_size, false);
  opt_forward(be, m, st.pass, st.cache, detail::as_const(st.embeds), tensor_view<const index_t, 2>(st.mask.data(), {B, Tn}));
  opt_logits(be, m, st.logits, detail::as_const(row_range(st.pass.out, 0, R)));
  cross_entropy_forward(be, st.loss, st.row_loss, cross_entropy_cache<T, Space>{st.lse, st.count},
                        detail::as_const(st.logits), st.targets.view());
  T loss{};
  copy_to_host(be, tensor_view<T, 1>(&loss, {1}), detail::as_const(st.loss));
  st.ready = true;
  return loss;
}

// The gradient of the last lm_forward's loss, added into m's gradient arena.
template <backend Be, class T, memory_space Space>
void lm_backward(Be& be, opt_model<T, Space>& m, lm_state<T, Space>& st) {
  BLIP2_CHECK(m.trainable(), value_error, "lm_backward: the decoder has no gradient arena (make it with "
              "opt_storage::with_gradients)");
  BLIP2_CHECK(st.ready, value_error, "lm_backward: no completed lm_forward to differentiate");
  const index_t B = st.B, Tn = st.T_text, R = (Tn - 1) * B;
  fill(be, st.dloss, T(1));
  cross_entropy_backward(be, st.dlogits, detail::as_const(st.dloss), detail::as_const(st.logits), st.targets.view(),
                         cross_entropy_cache<T, Space>{st.lse, st.count});
  fill(be, row_range(st.dout, R, Tn * B), T{});  // the last position predicts nothing
  opt_logits_backward(be, m, row_range(st.dout, 0, R), detail::as_const(st.dlogits),
                      detail::as_const(row_range(st.pass.out, 0, R)));
  opt_backward(be, m, st.pass, st.cache, detail::as_const(st.dout), st.dembeds);
  embedding_backward(be, m.g.embed_tokens, detail::as_const(st.dembeds), st.ids.view());
}

// AdamW's weight-decay segments of an owned decoder's arena, in for_each_opt_parameter order.
inline std::vector<param_segment> opt_decay_groups(const opt_config& cfg) {
  opt_weights<float> shapes;  // shapes only (null data)
  detail::shape_opt_weights(cfg, shapes);
  std::vector<param_segment> out;
  index_t offset = 0;
  for_each_opt_parameter(cfg, shapes, [&](const std::string& name, auto& v) {
    const std::size_t rank = std::remove_cvref_t<decltype(v)>::rank;
    out.push_back({name, offset, v.size(), decays(name, rank, no_decay_rule::lavis)});
    offset += v.size();
  });
  return out;
}

}  // namespace blip2
