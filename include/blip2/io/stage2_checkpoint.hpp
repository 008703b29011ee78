// blip2/io/stage2_checkpoint.hpp: save and resume BLIP-2 stage-2 training (train/stage2_trainer.hpp):
// what stage 2 trains (the Q-Former with query_tokens, and language_projection), both AdamW states, the
// step and the RNG state, in one safetensors file written atomically (save_safetensors: temporary file,
// fsync, rename). Made of training_checkpoint.hpp's pieces; the same guarantees.
//
// The file holds:
//   <name>                          every Q-Former parameter under its name (for_each_parameter: query_tokens,
//                                   qformer.*), and language_projection.weight (Dw, C), language_projection.bias (Dw)
//   optimizer.exp_avg.<name>        AdamW's first moment of each of them (same shape and dtype): the
//                                   Q-Former optimiser's for Q-Former names, the projection optimiser's for
//                                   language_projection.*
//   optimizer.exp_avg_sq.<name>     the second moment
//   __metadata__ (string -> string):
//     format = "pt", blip2.kind = "stage2_checkpoint", blip2.version = "1"
//     blip2.step, blip2.rng.seed, blip2.rng.counter   the caller's step and counter-based RNG state
//     blip2.dtype                   F32 or F64
//     blip2.config                  the Q-Former's architecture, "key=value;..." (training_checkpoint.hpp)
//     blip2.projection              "in_features=C;out_features=Dw;"
//     blip2.fingerprint             FNV-1a 64 of blip2.config, blip2.projection, the dtype and every
//                                   trained tensor's name and shape
//     blip2.decoder.config          the frozen OPT decoder's identity: every opt_config field that shapes
//                                   its weights or its outputs, "key=value;..." (not the dropout rates:
//                                   stage 2 runs the decoder without dropout)
//     blip2.decoder.fingerprint     FNV-1a 64 of blip2.decoder.config
//     blip2.optimizer.qformer, blip2.optimizer.projection = "adamw", each with .step, .beta1, .beta2, .eps,
//                                   .weight_decay, .no_decay (as blip2.optimizer in a training checkpoint)
// Not saved: the decoder's weights (frozen: they come from the LM directory the model is loaded from,
// and only its configuration is recorded, so two decoders of one configuration and other weights are
// not told apart), the image encoder (frozen, held apart), gradients (save between steps, after which
// they are zeroed anyway), the trainer's workspace (stage2_state: activations of the last step).
//
// load_stage2_checkpoint(path, model, trainer) checks everything before it writes anything, so a refused
// file leaves model and trainer as they were; every error names the file:
//   - a corrupted or truncated file: format_error (safetensors_file validates it);
//   - not a stage-2 checkpoint, another version or dtype, a missing or malformed metadata entry:
//     format_error naming the entry;
//   - another decoder: format_error naming each differing blip2.decoder.config key with both values
//     ("saved against another decoder: ffn_dim is 36 in the file but 40 in the model"); likewise another
//     Q-Former architecture or projection shape; an edited fingerprint: format_error;
//   - a missing or unexpected tensor: format_error naming it; a tensor of another shape: shape_error
//     naming it and both shapes; of another dtype: format_error;
//   - an optimiser of another size or weight-decay mask: value_error naming the parameter.
// Then it restores the Q-Former and projection parameters, both optimisers' moments, step counts and
// hyper-parameters (as torch's Optimizer.load_state_dict), and returns the step and the RNG state.
// A resumed run is bitwise identical to an uninterrupted one (tests/test_stage2_training.cpp).
//
//   auto m = blip2::load_blip2_opt("blip2-opt-2.7b");
//   blip2::stage2_trainer<float> tr(m);
//   ... tr.step(...) ...; blip2::save_stage2_checkpoint("ckpt.safetensors", m, tr, step, rng);
//   // later, another process:
//   auto m2 = blip2::load_blip2_opt("blip2-opt-2.7b");
//   blip2::stage2_trainer<float> tr2(m2);
//   const auto st = blip2::load_stage2_checkpoint("ckpt.safetensors", m2, tr2);   // st.step, st.rng
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/io/safetensors.hpp"
#include "blip2/io/training_checkpoint.hpp"
#include "blip2/models/blip2_opt/model.hpp"
#include "blip2/train/stage2_trainer.hpp"

namespace blip2 {

inline constexpr std::string_view stage2_checkpoint_kind = "stage2_checkpoint";
inline constexpr std::string_view stage2_checkpoint_version = "1";

namespace detail {

// The frozen decoder's identity, "key=value;...", every key listed in a fixed order.
inline std::string decoder_config_string(const opt_config& c) {
  std::string s;
  auto add = [&](const char* k, const std::string& v) { add_key_value(s, k, v); };
  auto flag = [](bool b) { return std::string(b ? "1" : "0"); };
  add("vocab_size", std::to_string(c.vocab_size));
  add("hidden_size", std::to_string(c.hidden_size));
  add("num_hidden_layers", std::to_string(c.num_hidden_layers));
  add("num_attention_heads", std::to_string(c.num_attention_heads));
  add("ffn_dim", std::to_string(c.ffn_dim));
  add("max_position_embeddings", std::to_string(c.max_position_embeddings));
  add("word_embed_proj_dim", std::to_string(c.word_embed_proj_dim));
  add("do_layer_norm_before", flag(c.do_layer_norm_before));
  add("remove_final_layer_norm", flag(c.remove_final_layer_norm));
  add("enable_bias", flag(c.enable_bias));
  add("layer_norm_elementwise_affine", flag(c.layer_norm_elementwise_affine));
  add("activation_function", c.activation_function);
  add("layer_norm_eps", shortest_decimal(c.layer_norm_eps));
  add("bos_token_id", std::to_string(c.bos_token_id));
  add("eos_token_id", std::to_string(c.eos_token_id));
  add("pad_token_id", std::to_string(c.pad_token_id));
  add("tie_word_embeddings", flag(c.tie_word_embeddings));
  return s;
}

inline std::string decoder_fingerprint(const opt_config& c) { return hex64(fnv1a(fnv1a_basis, decoder_config_string(c))); }

// language_projection's arena: weight (Dw, C), then bias (Dw).
template <class T>
arena_layout projection_layout(const language_projection<T>& p) {
  const auto& w = p.w.weight;
  const auto& b = p.w.bias;
  return {{"language_projection.weight", {w.extent(0), w.extent(1)}, 0, w.size()},
          {"language_projection.bias", {b.extent(0)}, static_cast<index_t>(b.data() - w.data()), b.size()}};
}

template <class T>
std::string projection_string(const language_projection<T>& p) {
  std::string s;
  add_key_value(s, "in_features", std::to_string(p.w.weight.extent(1)));
  add_key_value(s, "out_features", std::to_string(p.w.weight.extent(0)));
  return s;
}

template <class T>
std::string stage2_fingerprint(const blip2_opt_model<T>& m) {
  return checkpoint_fingerprint<T>(architecture_string(m.qformer.config()) + projection_string(m.projection),
                                   qformer_layout(m.qformer.config()), projection_layout(m.projection));
}

}  // namespace detail

// Writes what stage 2 trains (Q-Former, projection), both optimisers' states, step and RNG state to
// `path` atomically. Throws value_error when an optimiser's size differs from its arena's, format_error
// when writing fails.
template <class T>
void save_stage2_checkpoint(const std::filesystem::path& path, const blip2_opt_model<T>& m, const stage2_trainer<T>& tr,
                            std::int64_t step, rng_state rng) {
  const auto ql = detail::qformer_layout(m.qformer.config());
  const auto pl = detail::projection_layout(m.projection);
  auto check_size = [&](const char* what, const adamw<T>& opt, index_t n) {
    BLIP2_CHECK(opt.size() == n, value_error, "save_stage2_checkpoint '", path.string(), "': the ", what,
                " optimiser has ", opt.size(), " elements but the model has ", n, " parameters there");
  };
  check_size("Q-Former", tr.qformer_optimizer(), detail::layout_size(ql));
  check_size("projection", tr.projection_optimizer(), detail::layout_size(pl));
  std::vector<safetensors_entry> entries;
  // parameters() is the mutable arena; nothing is written through it here.
  const T* qparams = const_cast<qformer_model<T>&>(m.qformer).parameters().data();
  detail::append_arena_entries(entries, ql, qparams, tr.qformer_optimizer());
  detail::append_arena_entries(entries, pl, static_cast<const T*>(m.projection.w.weight.data()), tr.projection_optimizer());
  auto meta = detail::checkpoint_header<T>(stage2_checkpoint_kind, stage2_checkpoint_version, step, rng);
  meta["blip2.config"] = detail::architecture_string(m.qformer.config());
  meta["blip2.projection"] = detail::projection_string(m.projection);
  meta["blip2.fingerprint"] = detail::stage2_fingerprint(m);
  meta["blip2.decoder.config"] = detail::decoder_config_string(m.llm.config());
  meta["blip2.decoder.fingerprint"] = detail::decoder_fingerprint(m.llm.config());
  detail::add_optimizer_metadata(meta, "blip2.optimizer.qformer", tr.qformer_optimizer());
  detail::add_optimizer_metadata(meta, "blip2.optimizer.projection", tr.projection_optimizer());
  save_safetensors(path, entries, meta);
}

// Restores the Q-Former, the projection and the trainer's optimisers from `path` (made by
// save_stage2_checkpoint against the same decoder, architecture and dtype) and returns the saved step and
// RNG state. Every check comes first (see the top of this file).
template <class T>
training_checkpoint_state load_stage2_checkpoint(const std::filesystem::path& path, blip2_opt_model<T>& m,
                                                 stage2_trainer<T>& tr) {
  const safetensors_file file = safetensors_file::open(path);
  detail::checkpoint_reader in(file, "stage-2 checkpoint");
  in.check_kind<T>(stage2_checkpoint_kind, stage2_checkpoint_version);
  in.check_key_values("blip2.decoder.config", detail::decoder_config_string(m.llm.config()), "saved against another decoder");
  in.check_fingerprint("blip2.decoder.fingerprint", detail::decoder_fingerprint(m.llm.config()));
  in.check_key_values("blip2.config", detail::architecture_string(m.qformer.config()),
                      "saved from another Q-Former configuration");
  in.check_key_values("blip2.projection", detail::projection_string(m.projection), "saved with another language projection");
  const auto ql = detail::qformer_layout(m.qformer.config());
  const auto pl = detail::projection_layout(m.projection);
  in.check_arena_tensors<T>(ql);
  in.check_arena_tensors<T>(pl);
  in.check_no_other_tensors();
  in.check_fingerprint("blip2.fingerprint", detail::stage2_fingerprint(m));
  const auto oq = in.check_optimizer("blip2.optimizer.qformer", tr.qformer_optimizer(), detail::layout_size(ql));
  const auto op = in.check_optimizer("blip2.optimizer.projection", tr.projection_optimizer(), detail::layout_size(pl));
  const training_checkpoint_state st = in.step_and_rng();
  // ---- everything checked: read ----
  in.read_arena(ql, m.qformer.parameters().data(), tr.qformer_optimizer(), oq);
  in.read_arena(pl, m.projection.parameter_view().data(), tr.projection_optimizer(), op);
  return st;
}

}  // namespace blip2
