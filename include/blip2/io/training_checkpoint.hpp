// blip2/io/training_checkpoint.hpp: save and resume training (model + AdamW state + step + RNG state)
// in one safetensors file, written atomically (save_safetensors: temporary file, fsync, rename).
//
// The file holds:
//   <name>                         every Q-Former parameter under its Hugging Face name, so the file
//                                  also loads as a model (load_qformer_weights ignores the rest)
//   optimizer.exp_avg.<name>       AdamW's first moment of that parameter (same shape and dtype)
//   optimizer.exp_avg_sq.<name>    its second moment
//   __metadata__ (string -> string):
//     format = "pt", blip2.kind = "training_checkpoint", blip2.version = "1"
//     blip2.step                   the caller's training step (e.g. updates done so far)
//     blip2.rng.seed, blip2.rng.counter   the caller's counter-based RNG state (core/rng.hpp)
//     blip2.dtype                  F32 or F64 (the model's element type)
//     blip2.config                 the architecture, "key=value;..." (sizes, eps, activation, [DEC] id,
//                                  with_text, with_stage1_heads; not dropout rates, which do not change
//                                  the parameters: a run may resume with other dropout)
//     blip2.fingerprint            FNV-1a 64 of blip2.config, the dtype and every parameter's name and shape
//     blip2.optimizer = "adamw", blip2.optimizer.step (the bias-correction count), .beta1, .beta2, .eps,
//     .weight_decay (shortest round-trip decimal), blip2.optimizer.no_decay (the names not decayed, one
//     per line)
// Gradients are not saved: save between optimiser steps, after which they are zeroed anyway.
//
// load_training_checkpoint(path, model, optimizer) checks everything before it writes anything, so a
// refused file leaves model and optimiser as they were:
//   - a corrupted or truncated file: format_error naming the file (safetensors_file validates it);
//   - not a training checkpoint, a missing or malformed metadata entry: format_error naming the entry;
//   - another dtype, another architecture (each differing config key named with both values), a
//     missing or unexpected tensor (named), another fingerprint: format_error;
//   - a tensor of another shape: shape_error naming it and both shapes;
//   - an optimiser with another size or another weight-decay mask (the first differing parameter named):
//     value_error.
// Then it restores the parameters, the moments, the optimiser's step count and hyper-parameters (as
// torch's Optimizer.load_state_dict does; change them after loading to override), and returns the step
// and the RNG state. Saving and loading are exact, so a resumed run is bitwise identical to an
// uninterrupted one (tests/test_training_checkpoint.cpp).
#pragma once
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/optim/adamw.hpp"

namespace blip2 {

// The state of a counter-based RNG (core/rng.hpp): draws are a function of (seed, counter).
struct rng_state {
  std::uint64_t seed = 0;
  std::uint64_t counter = 0;
  friend bool operator==(const rng_state&, const rng_state&) = default;
};

struct training_checkpoint_state {
  std::int64_t step = 0;
  rng_state rng;
};

inline constexpr std::string_view training_checkpoint_kind = "training_checkpoint";
inline constexpr std::string_view training_checkpoint_version = "1";

namespace detail {

inline std::string shortest_decimal(double x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

// "key=value;key=value;..." describing the architecture; every key listed, in a fixed order.
inline std::string architecture_string(const qformer_model_config& cfg) {
  const auto& q = cfg.qformer;
  std::string s;
  auto add = [&](const char* k, const std::string& v) { s += std::string(k) + "=" + v + ";"; };
  add("vocab_size", std::to_string(q.vocab_size));
  add("hidden_size", std::to_string(q.hidden_size));
  add("num_hidden_layers", std::to_string(q.num_hidden_layers));
  add("num_attention_heads", std::to_string(q.num_attention_heads));
  add("intermediate_size", std::to_string(q.intermediate_size));
  add("hidden_act", q.hidden_act);
  add("max_position_embeddings", std::to_string(q.max_position_embeddings));
  add("layer_norm_eps", shortest_decimal(q.layer_norm_eps));
  add("position_embedding_type", q.position_embedding_type);
  add("cross_attention_frequency", std::to_string(q.cross_attention_frequency));
  add("encoder_hidden_size", std::to_string(q.encoder_hidden_size));
  add("dec_token_id", std::to_string(q.dec_token_id()));
  add("num_query_tokens", std::to_string(cfg.num_query_tokens));
  add("image_text_hidden_size", std::to_string(cfg.image_text_hidden_size));
  add("with_text", cfg.with_text ? "1" : "0");
  add("with_stage1_heads", cfg.with_stage1_heads ? "1" : "0");
  return s;
}

inline std::vector<std::pair<std::string, std::string>> split_key_values(std::string_view s) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!s.empty()) {
    const auto semi = s.find(';');
    const std::string_view item = s.substr(0, semi);
    const auto eq = item.find('=');
    out.emplace_back(std::string(item.substr(0, eq)), eq == std::string_view::npos ? "" : std::string(item.substr(eq + 1)));
    if (semi == std::string_view::npos) break;
    s.remove_prefix(semi + 1);
  }
  return out;
}

inline std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

template <class T>
constexpr std::string_view dtype_label() {
  return std::is_same_v<T, float> ? "F32" : "F64";
}

// Name and shape of every parameter of cfg, in arena order.
inline std::vector<std::pair<std::string, std::vector<index_t>>> parameter_shapes(const qformer_model_config& cfg) {
  qformer_weights<float> w;
  shape_weights(cfg, w);
  std::vector<std::pair<std::string, std::vector<index_t>>> out;
  for_each_parameter(cfg, w, [&](const std::string& name, auto& v) {
    out.emplace_back(name, std::vector<index_t>(v.extents().begin(), v.extents().end()));
  });
  return out;
}

template <class T>
std::string model_fingerprint(const qformer_model_config& cfg) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  h = fnv1a(h, architecture_string(cfg));
  h = fnv1a(h, "|");
  h = fnv1a(h, dtype_label<T>());
  for (const auto& [name, shape] : parameter_shapes(cfg)) {
    h = fnv1a(h, "|");
    h = fnv1a(h, name);
    h = fnv1a(h, vector_shape_string(shape));
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[static_cast<std::size_t>(i)] = hex[h & 15u];
  return s;
}

inline std::string no_decay_names(const std::vector<param_segment>& segs) {
  std::string s;
  for (const auto& seg : segs)
    if (!seg.decay) s += seg.name + "\n";
  return s;
}

}  // namespace detail

// Writes model, optimiser state, step and RNG state to `path` atomically. Throws value_error when the
// optimiser's size differs from the model's parameter count, format_error when writing fails.
template <class T>
void save_training_checkpoint(const std::filesystem::path& path, const qformer_model<T>& model, const adamw<T>& optimizer,
                              std::int64_t step, rng_state rng) {
  const auto& cfg = model.config();
  const index_t n = parameter_count<T>(cfg);
  BLIP2_CHECK(optimizer.size() == n, value_error, "save_training_checkpoint '", path.string(), "': the optimiser has ",
              optimizer.size(), " elements but the model has ", n, " parameters");
  std::vector<safetensors_entry> entries;
  // for_each_parameter visits mutable views; nothing is written through them here.
  auto& w = const_cast<qformer_weights<T>&>(model.w);
  for_each_parameter(cfg, w, [&](const std::string& name, auto& v) { entries.push_back(safetensors_entry::of(name, v)); });
  auto add_state = [&](const std::string& prefix, std::span<const T> state) {
    auto views = bind_weights<const T>(cfg, state.data());
    for_each_parameter(cfg, views, [&](const std::string& name, auto& v) {
      entries.push_back(safetensors_entry::of(prefix + name, v));
    });
  };
  add_state("optimizer.exp_avg.", optimizer.exp_avg());
  add_state("optimizer.exp_avg_sq.", optimizer.exp_avg_sq());
  const auto& o = optimizer.options();
  const safetensors_metadata meta{
      {"format", "pt"},
      {"blip2.kind", std::string(training_checkpoint_kind)},
      {"blip2.version", std::string(training_checkpoint_version)},
      {"blip2.step", std::to_string(step)},
      {"blip2.rng.seed", std::to_string(rng.seed)},
      {"blip2.rng.counter", std::to_string(rng.counter)},
      {"blip2.dtype", std::string(detail::dtype_label<T>())},
      {"blip2.config", detail::architecture_string(cfg)},
      {"blip2.fingerprint", detail::model_fingerprint<T>(cfg)},
      {"blip2.optimizer", "adamw"},
      {"blip2.optimizer.step", std::to_string(optimizer.step_count())},
      {"blip2.optimizer.beta1", detail::shortest_decimal(o.beta1)},
      {"blip2.optimizer.beta2", detail::shortest_decimal(o.beta2)},
      {"blip2.optimizer.eps", detail::shortest_decimal(o.eps)},
      {"blip2.optimizer.weight_decay", detail::shortest_decimal(o.weight_decay)},
      {"blip2.optimizer.no_decay", detail::no_decay_names(optimizer.segments())},
  };
  save_safetensors(path, entries, meta);
}

// Restores model and optimiser from `path` (made by save_training_checkpoint for the same architecture
// and dtype) and returns the saved step and RNG state. Every check comes first (see the top of this file).
template <class T>
training_checkpoint_state load_training_checkpoint(const std::filesystem::path& path, qformer_model<T>& model,
                                                   adamw<T>& optimizer) {
  const safetensors_file file = safetensors_file::open(path);
  const std::string& label = file.label();
  const auto& meta = file.metadata();
  auto get = [&](std::string_view key) -> const std::string& {
    auto it = meta.find(key);
    BLIP2_CHECK(it != meta.end(), format_error, "training checkpoint '", label, "': no __metadata__ entry '", key, "'",
                key == "blip2.kind" ? " (not a blip2 training checkpoint)" : "");
    return it->second;
  };
  auto get_int = [&]<class I>(std::string_view key, I& out) {
    const std::string& s = get(key);
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    BLIP2_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size(), format_error, "training checkpoint '", label,
                "': __metadata__ '", key, "' = \"", s, "\" is not an integer in range");
  };
  auto get_double = [&](std::string_view key) {
    const std::string& s = get(key);
    double out = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    BLIP2_CHECK(r.ec == std::errc() && r.ptr == s.data() + s.size(), format_error, "training checkpoint '", label,
                "': __metadata__ '", key, "' = \"", s, "\" is not a number");
    return out;
  };

  // ---- what the file is ----
  BLIP2_CHECK(get("blip2.kind") == training_checkpoint_kind, format_error, "training checkpoint '", label,
              "': __metadata__ 'blip2.kind' is \"", get("blip2.kind"), "\", not \"", training_checkpoint_kind, "\"");
  BLIP2_CHECK(get("blip2.version") == training_checkpoint_version, format_error, "training checkpoint '", label,
              "': version \"", get("blip2.version"), "\" is not supported (this library reads version \"",
              training_checkpoint_version, "\")");
  BLIP2_CHECK(get("blip2.optimizer") == "adamw", format_error, "training checkpoint '", label, "': optimiser \"",
              get("blip2.optimizer"), "\" is not adamw");
  BLIP2_CHECK(get("blip2.dtype") == detail::dtype_label<T>(), format_error, "training checkpoint '", label,
              "': saved from a model of dtype ", get("blip2.dtype"), " but this model is ", detail::dtype_label<T>());

  // ---- the architecture, key by key ----
  const auto& cfg = model.config();
  {
    const auto want = detail::split_key_values(detail::architecture_string(cfg));
    const auto have_list = detail::split_key_values(get("blip2.config"));
    const std::map<std::string, std::string> have(have_list.begin(), have_list.end());
    std::string diff;
    for (const auto& [k, v] : want) {
      auto it = have.find(k);
      const std::string fv = it == have.end() ? "(absent)" : it->second;
      if (fv != v) diff += (diff.empty() ? "" : ", ") + k + " is " + fv + " in the file but " + v + " in the model";
    }
    BLIP2_CHECK(diff.empty(), format_error, "training checkpoint '", label,
                "' was saved from another configuration: ", diff);
  }

  // ---- every tensor: present, same shape and dtype; nothing else ----
  const auto shapes = detail::parameter_shapes(cfg);
  std::set<std::string, std::less<>> expected;
  for (const char* prefix : {"", "optimizer.exp_avg.", "optimizer.exp_avg_sq."}) {
    for (const auto& [name, shape] : shapes) {
      const std::string full = prefix + name;
      BLIP2_CHECK(file.contains(full), format_error, "training checkpoint '", label, "': missing tensor '", full,
                  "' (expected shape ", detail::vector_shape_string(shape), ")");
      const auto& info = file.info(full);
      BLIP2_CHECK(info.shape == shape, shape_error, "training checkpoint '", label, "': tensor '", full, "' has shape ",
                  detail::vector_shape_string(info.shape), " but the model's is ", detail::vector_shape_string(shape));
      BLIP2_CHECK(dtype_name(info.dtype) == detail::dtype_label<T>(), format_error, "training checkpoint '", label,
                  "': tensor '", full, "' has dtype ", dtype_name(info.dtype), " but the model's is ",
                  detail::dtype_label<T>());
      expected.insert(full);
    }
  }
  for (const auto& t : file.tensors())
    BLIP2_CHECK(expected.contains(t.name), format_error, "training checkpoint '", label, "': unexpected tensor '",
                t.name, "' (the model has no parameter of that name)");
  const std::string fp = detail::model_fingerprint<T>(cfg);
  BLIP2_CHECK(get("blip2.fingerprint") == fp, format_error, "training checkpoint '", label, "': fingerprint ",
              get("blip2.fingerprint"), " differs from the model's ", fp,
              " although the configuration and tensors match (was the file edited?)");

  // ---- the optimiser ----
  BLIP2_CHECK(optimizer.size() == parameter_count<T>(cfg), value_error, "load_training_checkpoint '", label,
              "': the optimiser has ", optimizer.size(), " elements but the model has ", parameter_count<T>(cfg),
              " parameters");
  {
    const std::string& nd = get("blip2.optimizer.no_decay");
    std::set<std::string, std::less<>> file_no_decay;
    for (std::size_t pos = 0; pos < nd.size();) {
      const auto nl = nd.find('\n', pos);
      file_no_decay.insert(nd.substr(pos, nl - pos));
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
    std::set<std::string, std::less<>> named;
    for (const auto& seg : optimizer.segments()) {
      named.insert(seg.name);
      const bool file_decays = !file_no_decay.contains(seg.name);
      BLIP2_CHECK(file_decays == seg.decay, value_error, "load_training_checkpoint '", label, "': parameter '", seg.name,
                  "' is ", file_decays ? "" : "not ", "weight-decayed in the checkpoint but ", seg.decay ? "" : "not ",
                  "in this optimiser");
    }
    for (const auto& name : file_no_decay)
      BLIP2_CHECK(named.contains(name), value_error, "load_training_checkpoint '", label, "': parameter '", name,
                  "' is not weight-decayed in the checkpoint but this optimiser has no segment of that name");
  }
  training_checkpoint_state st;
  std::int64_t opt_step = 0;
  get_int("blip2.step", st.step);
  get_int("blip2.rng.seed", st.rng.seed);
  get_int("blip2.rng.counter", st.rng.counter);
  get_int("blip2.optimizer.step", opt_step);
  BLIP2_CHECK(opt_step >= 0, format_error, "training checkpoint '", label, "': blip2.optimizer.step = ", opt_step,
              " is negative");
  adamw_options o;
  o.beta1 = get_double("blip2.optimizer.beta1");
  o.beta2 = get_double("blip2.optimizer.beta2");
  o.eps = get_double("blip2.optimizer.eps");
  o.weight_decay = get_double("blip2.optimizer.weight_decay");
  try {
    adamw<T>(0, o);  // validates the options without touching the optimiser
  } catch (const value_error& e) {
    detail::raise<format_error>("training checkpoint '", label, "': ", e.what());
  }

  // ---- everything checked: read ----
  load_qformer_weights(model, file);
  auto exp_avg = bind_weights<T>(cfg, optimizer.exp_avg().data());
  auto exp_avg_sq = bind_weights<T>(cfg, optimizer.exp_avg_sq().data());
  for_each_parameter(cfg, exp_avg, [&](const std::string& name, auto& v) { file.read_into("optimizer.exp_avg." + name, v); });
  for_each_parameter(cfg, exp_avg_sq,
                     [&](const std::string& name, auto& v) { file.read_into("optimizer.exp_avg_sq." + name, v); });
  optimizer.set_step_count(opt_step);
  optimizer.set_options(o);
  return st;
}

}  // namespace blip2
