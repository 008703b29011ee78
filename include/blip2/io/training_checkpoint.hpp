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
//
// The pieces (detail::): a trained arena's tensors and moments as entries (append_arena_entries), an
// optimiser's metadata (add_optimizer_metadata), and checkpoint_reader, which checks a file's kind,
// configuration strings, tensors, fingerprints and optimisers before read_arena writes anything. The
// stage-2 checkpoint (io/stage2_checkpoint.hpp) is made of the same pieces.
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

// Appends "key=value;" to a configuration string.
inline void add_key_value(std::string& s, std::string_view key, const std::string& value) {
  s.append(key).append("=").append(value).append(";");
}

// "key=value;key=value;..." describing the architecture; every key listed, in a fixed order.
inline std::string architecture_string(const qformer_model_config& cfg) {
  const auto& q = cfg.qformer;
  std::string s;
  auto add = [&](const char* k, const std::string& v) { add_key_value(s, k, v); };
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

inline constexpr std::uint64_t fnv1a_basis = 0xcbf29ce484222325ull;

inline std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// 16 lower-case hex digits.
inline std::string hex64(std::uint64_t h) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[static_cast<std::size_t>(i)] = hex[h & 15u];
  return s;
}

template <class T>
constexpr std::string_view dtype_label() {
  return std::is_same_v<T, float> ? "F32" : "F64";
}

// One tensor of a flat arena (parameters, or an optimiser moment laid out like them) as a checkpoint
// stores it: its name, its shape, and where its elements start in the arena.
struct arena_tensor {
  std::string name;
  std::vector<index_t> shape;
  index_t offset = 0;
  index_t size = 0;
};
using arena_layout = std::vector<arena_tensor>;

// Every parameter of a Q-Former of cfg, in arena order (bind_weights' layout).
inline arena_layout qformer_layout(const qformer_model_config& cfg) {
  qformer_weights<float> w;
  shape_weights(cfg, w);
  arena_layout out;
  index_t offset = 0;
  for_each_parameter(cfg, w, [&](const std::string& name, auto& v) {
    out.push_back({name, std::vector<index_t>(v.extents().begin(), v.extents().end()), offset, v.size()});
    offset += v.size();
  });
  return out;
}

inline index_t layout_size(const arena_layout& layout) {
  return layout.empty() ? 0 : layout.back().offset + layout.back().size;
}

// FNV-1a 64 of a configuration string, the dtype and every tensor's name and shape.
template <class T, class... Layouts>
std::string checkpoint_fingerprint(std::string_view config, const Layouts&... layouts) {
  std::uint64_t h = fnv1a(fnv1a_basis, config);
  h = fnv1a(h, "|");
  h = fnv1a(h, dtype_label<T>());
  auto add = [&](const arena_layout& layout) {
    for (const auto& t : layout) {
      h = fnv1a(h, "|");
      h = fnv1a(h, t.name);
      h = fnv1a(h, vector_shape_string(t.shape));
    }
  };
  (add(layouts), ...);
  return hex64(h);
}

template <class T>
std::string model_fingerprint(const qformer_model_config& cfg) {
  return checkpoint_fingerprint<T>(architecture_string(cfg), qformer_layout(cfg));
}

inline std::string no_decay_names(const std::vector<param_segment>& segs) {
  std::string s;
  for (const auto& seg : segs)
    if (!seg.decay) s += seg.name + "\n";
  return s;
}

// The prefixes a trained arena's tensors are stored under: the parameters, AdamW's two moments.
inline constexpr std::string_view moment_prefixes[] = {"optimizer.exp_avg.", "optimizer.exp_avg_sq."};

// Entries borrowing a trained arena: its parameters under their names, then the optimiser's moments.
template <class T>
void append_arena_entries(std::vector<safetensors_entry>& out, const arena_layout& layout, const T* params,
                          const adamw<T>& optimizer) {
  auto add = [&](std::string_view prefix, const T* base) {
    for (const auto& t : layout)
      out.emplace_back(std::string(prefix) + t.name, dtype_of<T>(), t.shape,
                       std::span<const std::byte>(reinterpret_cast<const std::byte*>(base + t.offset),
                                                  static_cast<std::size_t>(t.size) * sizeof(T)));
  };
  add("", params);
  add(moment_prefixes[0], optimizer.exp_avg().data());
  add(moment_prefixes[1], optimizer.exp_avg_sq().data());
}

// An AdamW's state in the metadata, under `key` ("adamw") and key.step, .beta1, .beta2, .eps,
// .weight_decay, .no_decay.
template <class T>
void add_optimizer_metadata(safetensors_metadata& meta, const std::string& key, const adamw<T>& optimizer) {
  const auto& o = optimizer.options();
  meta[key] = "adamw";
  meta[key + ".step"] = std::to_string(optimizer.step_count());
  meta[key + ".beta1"] = shortest_decimal(o.beta1);
  meta[key + ".beta2"] = shortest_decimal(o.beta2);
  meta[key + ".eps"] = shortest_decimal(o.eps);
  meta[key + ".weight_decay"] = shortest_decimal(o.weight_decay);
  meta[key + ".no_decay"] = no_decay_names(optimizer.segments());
}

// The metadata every checkpoint starts with: format, kind, version, step, RNG state, dtype.
template <class T>
safetensors_metadata checkpoint_header(std::string_view kind, std::string_view version, std::int64_t step, rng_state rng) {
  return {
      {"format", "pt"},
      {"blip2.kind", std::string(kind)},
      {"blip2.version", std::string(version)},
      {"blip2.step", std::to_string(step)},
      {"blip2.rng.seed", std::to_string(rng.seed)},
      {"blip2.rng.counter", std::to_string(rng.counter)},
      {"blip2.dtype", std::string(dtype_label<T>())},
  };
}

// What the file says of one optimiser, read and checked.
struct optimizer_record {
  std::int64_t step = 0;
  adamw_options options;
};

// Reads and checks a checkpoint before anything is written; every error names the file ("<what>
// '<file>': ..."). Collects the tensors it checked so that check_no_other_tensors can refuse the rest.
class checkpoint_reader {
 public:
  checkpoint_reader(const safetensors_file& file, std::string what) : file_(file), what_(std::move(what)) {}

  const safetensors_file& file() const { return file_; }

  template <class E = format_error, class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    raise<E>(what_, " '", file_.label(), "': ", std::forward<Parts>(parts)...);
  }

  const std::string& get(std::string_view key) const {
    const auto& meta = file_.metadata();
    auto it = meta.find(key);
    if (it == meta.end())
      fail("no __metadata__ entry '", key, "'", key == "blip2.kind" ? " (not a blip2 " + what_ + ")" : std::string());
    return it->second;
  }
  template <class I>
  I get_int(std::string_view key) const {
    const std::string& s = get(key);
    I out{};
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size())
      fail("__metadata__ '", key, "' = \"", s, "\" is not an integer in range");
    return out;
  }
  double get_double(std::string_view key) const {
    const std::string& s = get(key);
    double out = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size()) fail("__metadata__ '", key, "' = \"", s, "\" is not a number");
    return out;
  }

  // The file's kind, version and dtype.
  template <class T>
  void check_kind(std::string_view kind, std::string_view version) const {
    if (get("blip2.kind") != kind)
      fail("__metadata__ 'blip2.kind' is \"", get("blip2.kind"), "\", not \"", kind, "\"");
    if (get("blip2.version") != version)
      fail("version \"", get("blip2.version"), "\" is not supported (this library reads version \"", version, "\")");
    if (get("blip2.dtype") != dtype_label<T>())
      fail("saved from a model of dtype ", get("blip2.dtype"), " but this model is ", dtype_label<T>());
  }

  // A "key=value;..." entry compared key by key with the model's; every differing key is named with both
  // values after `what_differs` (e.g. "saved from another configuration").
  void check_key_values(std::string_view key, std::string_view model_value, std::string_view what_differs) const {
    const auto have_list = split_key_values(get(key));
    const std::map<std::string, std::string> have(have_list.begin(), have_list.end());
    std::string diff;
    for (const auto& [k, v] : split_key_values(model_value)) {
      auto it = have.find(k);
      const std::string fv = it == have.end() ? "(absent)" : it->second;
      if (fv != v) diff += (diff.empty() ? "" : ", ") + k + " is " + fv + " in the file but " + v + " in the model";
    }
    if (!diff.empty()) fail(what_differs, ": ", diff);
  }

  void check_fingerprint(std::string_view key, const std::string& model_value) const {
    if (get(key) != model_value)
      fail("fingerprint ", get(key), " differs from the model's ", model_value, " (", key,
           ") although the configuration and tensors match (was the file edited?)");
  }

  // Every tensor of a trained arena (parameters and both moments): present, of the layout's shape and of
  // dtype T.
  template <class T>
  void check_arena_tensors(const arena_layout& layout) {
    for (std::string_view prefix : {std::string_view(), moment_prefixes[0], moment_prefixes[1]})
      for (const auto& t : layout) {
        const std::string full = std::string(prefix) + t.name;
        if (!file_.contains(full))
          fail("missing tensor '", full, "' (expected shape ", vector_shape_string(t.shape), ")");
        const auto& info = file_.info(full);
        if (info.shape != t.shape)
          fail<shape_error>("tensor '", full, "' has shape ", vector_shape_string(info.shape), " but the model's is ",
                            vector_shape_string(t.shape));
        if (dtype_name(info.dtype) != dtype_label<T>())
          fail("tensor '", full, "' has dtype ", dtype_name(info.dtype), " but the model's is ", dtype_label<T>());
        checked_.insert(full);
      }
  }
  void check_no_other_tensors() const {
    for (const auto& t : file_.tensors())
      if (!checked_.contains(t.name))
        fail("unexpected tensor '", t.name, "' (the model has no parameter of that name)");
  }

  // The optimiser stored under `key` (add_optimizer_metadata) against `optimizer`, which must have
  // `size` elements and the same weight-decay mask (value_error otherwise).
  template <class T>
  optimizer_record check_optimizer(const std::string& key, const adamw<T>& optimizer, index_t size) const {
    if (get(key) != "adamw") fail("optimiser \"", get(key), "\" (", key, ") is not adamw");
    if (optimizer.size() != size)
      fail<value_error>("the optimiser has ", optimizer.size(), " elements but the model has ", size, " parameters (",
                        key, ")");
    const std::string& nd = get(key + ".no_decay");
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
      if (file_decays != seg.decay)
        fail<value_error>("parameter '", seg.name, "' is ", file_decays ? "" : "not ", "weight-decayed in the checkpoint but ",
                          seg.decay ? "" : "not ", "in this optimiser");
    }
    for (const auto& name : file_no_decay)
      if (!named.contains(name))
        fail<value_error>("parameter '", name,
                          "' is not weight-decayed in the checkpoint but this optimiser has no segment of that name");
    optimizer_record r;
    r.step = get_int<std::int64_t>(key + ".step");
    if (r.step < 0) fail(key, ".step = ", r.step, " is negative");
    r.options.beta1 = get_double(key + ".beta1");
    r.options.beta2 = get_double(key + ".beta2");
    r.options.eps = get_double(key + ".eps");
    r.options.weight_decay = get_double(key + ".weight_decay");
    try {
      adamw<T>(0, r.options);  // validates the options without touching the optimiser
    } catch (const value_error& e) {
      fail(e.what());
    }
    return r;
  }

  training_checkpoint_state step_and_rng() const {
    training_checkpoint_state st;
    st.step = get_int<std::int64_t>("blip2.step");
    st.rng.seed = get_int<std::uint64_t>("blip2.rng.seed");
    st.rng.counter = get_int<std::uint64_t>("blip2.rng.counter");
    return st;
  }

  // After every check: the arena's parameters and moments, the optimiser's step count and options.
  template <class T>
  void read_arena(const arena_layout& layout, T* params, adamw<T>& optimizer, const optimizer_record& r) const {
    auto read = [&](std::string_view prefix, T* base) {
      for (const auto& t : layout) {
        const std::string full = std::string(prefix) + t.name;
        decode<T>(file_.info(full).dtype, file_.bytes(full).data(), base + t.offset, static_cast<std::size_t>(t.size));
      }
    };
    read("", params);
    read(moment_prefixes[0], optimizer.exp_avg().data());
    read(moment_prefixes[1], optimizer.exp_avg_sq().data());
    optimizer.set_step_count(r.step);
    optimizer.set_options(r.options);
  }

 private:
  const safetensors_file& file_;
  std::string what_;
  std::set<std::string, std::less<>> checked_;
};

}  // namespace detail

// Writes model, optimiser state, step and RNG state to `path` atomically. Throws value_error when the
// optimiser's size differs from the model's parameter count, format_error when writing fails.
template <class T>
void save_training_checkpoint(const std::filesystem::path& path, const qformer_model<T>& model, const adamw<T>& optimizer,
                              std::int64_t step, rng_state rng) {
  const auto& cfg = model.config();
  const auto layout = detail::qformer_layout(cfg);
  const index_t n = detail::layout_size(layout);
  BLIP2_CHECK(optimizer.size() == n, value_error, "save_training_checkpoint '", path.string(), "': the optimiser has ",
              optimizer.size(), " elements but the model has ", n, " parameters");
  std::vector<safetensors_entry> entries;
  // parameters() is the mutable arena; nothing is written through it here.
  const T* params = const_cast<qformer_model<T>&>(model).parameters().data();
  detail::append_arena_entries(entries, layout, params, optimizer);
  auto meta = detail::checkpoint_header<T>(training_checkpoint_kind, training_checkpoint_version, step, rng);
  meta["blip2.config"] = detail::architecture_string(cfg);
  meta["blip2.fingerprint"] = detail::model_fingerprint<T>(cfg);
  detail::add_optimizer_metadata(meta, "blip2.optimizer", optimizer);
  save_safetensors(path, entries, meta);
}

// Restores model and optimiser from `path` (made by save_training_checkpoint for the same architecture
// and dtype) and returns the saved step and RNG state. Every check comes first (see the top of this file).
template <class T>
training_checkpoint_state load_training_checkpoint(const std::filesystem::path& path, qformer_model<T>& model,
                                                   adamw<T>& optimizer) {
  const safetensors_file file = safetensors_file::open(path);
  detail::checkpoint_reader in(file, "training checkpoint");
  in.check_kind<T>(training_checkpoint_kind, training_checkpoint_version);
  const auto& cfg = model.config();
  in.check_key_values("blip2.config", detail::architecture_string(cfg), "saved from another configuration");
  const auto layout = detail::qformer_layout(cfg);
  in.check_arena_tensors<T>(layout);
  in.check_no_other_tensors();
  in.check_fingerprint("blip2.fingerprint", detail::model_fingerprint<T>(cfg));
  const auto opt = in.check_optimizer("blip2.optimizer", optimizer, detail::layout_size(layout));
  const training_checkpoint_state st = in.step_and_rng();
  // ---- everything checked: read ----
  in.read_arena(layout, model.parameters().data(), optimizer, opt);
  return st;
}

}  // namespace blip2
