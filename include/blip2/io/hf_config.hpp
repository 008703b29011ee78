// blip2/io/hf_config.hpp: read a Hugging Face Blip2Config (`config.json`) into plain structs (needs
// nlohmann_json).
//
// Every field absent from the file takes the value of transformers' Blip2QFormerConfig / Blip2Config
// (the released Salesforce/blip2-* models): a config.json that only says {"model_type": "blip-2"} gives
// the real Q-Former. Unknown fields are ignored, as transformers does. What is refused (format_error,
// naming the file and the field):
//   - a missing or unreadable file, text that is not JSON, a top level that is not an object;
//   - a file that is not a Blip2Config: no "qformer_config" and a "model_type" other than "blip-2";
//   - a field of the wrong JSON type (an integer field holding 768.5 or "768"; null where a value is
//     needed; only pad_token_id and bos_token_id may be null, meaning "none");
//   - inconsistent or out-of-domain values: sizes < 1, hidden_size not divisible by num_attention_heads,
//     cross_attention_frequency < 1, layer_norm_eps <= 0 (or not finite), a dropout outside [0, 1),
//     pad/bos token ids outside [0, vocab_size), vision_config.hidden_size != encoder_hidden_size when
//     both are given (transformers silently overwrites the Q-Former's value with the vision width);
//   - hidden_act other than "gelu" (the exact erf GELU: the only activation implemented so far), and
//     position_embedding_type other than "absolute".
//
//   blip2::blip2_config cfg = blip2::load_blip2_config("blip2-itm-vit-g/config.json");
//   cfg.qformer.hidden_size;         // 768
//   cfg.qformer.dec_token_id();      // bos_token_id, or vocab_size - 1 when there is none
#pragma once
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/models/qformer/config.hpp"  // qformer_config: the struct this file fills in
#include "blip2/models/vit/config.hpp"   // vision_config (frozen image encoder)

namespace blip2 {

// Blip2Config: the Q-Former part plus what the Q-Former heads need; the vision and language model
// sections are kept as raw JSON for the code that builds those models.
struct blip2_config {
  qformer_config qformer;
  index_t num_query_tokens = 32;        // Q
  index_t image_text_hidden_size = 256; // D, the ITC projection width
  nlohmann::json vision_config = nlohmann::json::object();  // as in the file ({} when absent)
  // ---- vision_config, parsed (the frozen image encoder) ----
  // Field types are checked when the file is read; the values' consistency only by check_vision_config()
  // (load_vision_config does it), so a Q-Former-only config with a bare {"hidden_size": 24} still loads.
  ::blip2::vision_config vision;  // qualified: the JSON member above is also named vision_config
  // ---- end vision_config ----
  nlohmann::json text_config = nlohmann::json::object();
};

namespace detail {

// Reads typed fields of one JSON object; `where` is its path ("qformer_config") for messages.
class config_fields {
 public:
  config_fields(const nlohmann::json& obj, std::string source, std::string where)
      : obj_(obj), source_(std::move(source)), where_(std::move(where)) {}

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    raise<format_error>("Hugging Face config '", source_, "': ", std::forward<Parts>(parts)...);
  }
  std::string path(std::string_view key) const { return where_.empty() ? std::string(key) : where_ + "." + std::string(key); }

  const nlohmann::json* find(std::string_view key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }

  void get(std::string_view key, index_t& out) const {
    if (const auto* v = find(key)) out = as_int(key, *v);
  }
  void get(std::string_view key, std::optional<index_t>& out) const {  // null allowed: none
    if (const auto* v = find(key)) out = v->is_null() ? std::nullopt : std::optional<index_t>(as_int(key, *v));
  }
  void get(std::string_view key, double& out) const {
    if (const auto* v = find(key)) {
      if (!v->is_number()) fail("field '", path(key), "' is ", describe(*v), ", expected a number");
      out = v->get<double>();
    }
  }
  void get(std::string_view key, std::string& out) const {
    if (const auto* v = find(key)) {
      if (!v->is_string()) fail("field '", path(key), "' is ", describe(*v), ", expected a string");
      out = v->get<std::string>();
    }
  }
  void get(std::string_view key, bool& out) const {
    if (const auto* v = find(key)) {
      if (!v->is_boolean()) fail("field '", path(key), "' is ", describe(*v), ", expected true or false");
      out = v->get<bool>();
    }
  }

  static std::string describe(const nlohmann::json& v) {
    if (v.is_null()) return "null";
    if (v.is_number() || v.is_boolean()) return v.dump();
    if (v.is_string()) return "the string " + v.dump();
    return std::string("a JSON ") + v.type_name();
  }

 private:
  index_t as_int(std::string_view key, const nlohmann::json& v) const {
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        fail("field '", path(key), "' = ", u, " does not fit a 64-bit integer");
      return static_cast<index_t>(u);
    }
    if (v.is_number_integer()) return v.get<index_t>();
    fail("field '", path(key), "' is ", describe(v), ", expected an integer");
  }

  const nlohmann::json& obj_;
  std::string source_;
  std::string where_;
};

}  // namespace detail

// Checks a configuration's values (also for one built in code); format_error names `source`.
inline void validate_blip2_config(const blip2_config& cfg, std::string_view source = "<config>") {
  const auto& q = cfg.qformer;
  auto fail = [&](auto&&... parts) {
    detail::raise<format_error>("Hugging Face config '", source, "': ", parts...);
  };
  auto positive = [&](const char* name, index_t v) {
    if (v < 1) fail("field '", name, "' = ", v, " must be >= 1");
  };
  positive("qformer_config.vocab_size", q.vocab_size);
  positive("qformer_config.hidden_size", q.hidden_size);
  positive("qformer_config.num_hidden_layers", q.num_hidden_layers);
  positive("qformer_config.num_attention_heads", q.num_attention_heads);
  positive("qformer_config.intermediate_size", q.intermediate_size);
  positive("qformer_config.max_position_embeddings", q.max_position_embeddings);
  positive("qformer_config.encoder_hidden_size", q.encoder_hidden_size);
  positive("num_query_tokens", cfg.num_query_tokens);
  positive("image_text_hidden_size", cfg.image_text_hidden_size);
  if (q.hidden_size % q.num_attention_heads != 0)
    fail("qformer_config.hidden_size = ", q.hidden_size, " is not divisible by qformer_config.num_attention_heads = ",
         q.num_attention_heads);
  if (q.cross_attention_frequency < 1)
    fail("field 'qformer_config.cross_attention_frequency' = ", q.cross_attention_frequency,
         " must be >= 1 (layer l cross-attends when l % frequency == 0)");
  if (!(q.layer_norm_eps > 0) || !std::isfinite(q.layer_norm_eps))
    fail("field 'qformer_config.layer_norm_eps' = ", q.layer_norm_eps, " must be a finite number > 0");
  auto dropout = [&](const char* name, double p) {
    if (!(p >= 0 && p < 1)) fail("field '", name, "' = ", p, " must be in [0, 1)");
  };
  dropout("qformer_config.hidden_dropout_prob", q.hidden_dropout_prob);
  dropout("qformer_config.attention_probs_dropout_prob", q.attention_probs_dropout_prob);
  if (!(q.initializer_range >= 0) || !std::isfinite(q.initializer_range))
    fail("field 'qformer_config.initializer_range' = ", q.initializer_range, " must be a finite number >= 0");
  auto token = [&](const char* name, const std::optional<index_t>& id) {
    if (id && (*id < 0 || *id >= q.vocab_size))
      fail("field '", name, "' = ", *id, " is outside the vocabulary [0, ", q.vocab_size, ")");
  };
  token("qformer_config.pad_token_id", q.pad_token_id);
  token("qformer_config.bos_token_id", q.bos_token_id);
  if (q.hidden_act != "gelu")
    fail("field 'qformer_config.hidden_act' = \"", q.hidden_act,
         "\": only \"gelu\" (exact erf GELU, as in every released BLIP-2) is implemented");
  if (q.position_embedding_type != "absolute")
    fail("field 'qformer_config.position_embedding_type' = \"", q.position_embedding_type,
         "\": only \"absolute\" is implemented");
}

// From parsed JSON; `source` names it in messages.
inline blip2_config parse_blip2_config(const nlohmann::json& root, std::string_view source = "<json>") {
  const std::string src(source);
  detail::config_fields top(root, src, "");
  if (!root.is_object()) top.fail("the top level is ", detail::config_fields::describe(root), ", expected a JSON object");

  const auto* model_type = top.find("model_type");
  const auto* qf = top.find("qformer_config");
  if (model_type && !(model_type->is_string() && model_type->get<std::string>() == "blip-2"))
    top.fail("field 'model_type' is ", detail::config_fields::describe(*model_type), ", expected \"blip-2\" (a Blip2Config)");
  if (!model_type && !qf)
    top.fail("missing field 'qformer_config' (and no \"model_type\": \"blip-2\"): this is not a Blip2Config");

  blip2_config cfg;
  top.get("num_query_tokens", cfg.num_query_tokens);
  top.get("image_text_hidden_size", cfg.image_text_hidden_size);

  auto section = [&](const char* key) -> const nlohmann::json* {
    const auto* s = top.find(key);
    if (!s || s->is_null()) return nullptr;  // transformers: None -> defaults
    if (!s->is_object()) top.fail("field '", key, "' is ", detail::config_fields::describe(*s), ", expected an object");
    return s;
  };
  std::optional<index_t> encoder_hidden_from_qformer;
  if (const auto* q = section("qformer_config")) {
    detail::config_fields f(*q, src, "qformer_config");
    auto& c = cfg.qformer;
    f.get("vocab_size", c.vocab_size);
    f.get("hidden_size", c.hidden_size);
    f.get("num_hidden_layers", c.num_hidden_layers);
    f.get("num_attention_heads", c.num_attention_heads);
    f.get("intermediate_size", c.intermediate_size);
    f.get("hidden_act", c.hidden_act);
    f.get("hidden_dropout_prob", c.hidden_dropout_prob);
    f.get("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
    f.get("max_position_embeddings", c.max_position_embeddings);
    f.get("initializer_range", c.initializer_range);
    f.get("layer_norm_eps", c.layer_norm_eps);
    f.get("pad_token_id", c.pad_token_id);
    f.get("bos_token_id", c.bos_token_id);
    f.get("position_embedding_type", c.position_embedding_type);
    f.get("cross_attention_frequency", c.cross_attention_frequency);
    f.get("use_qformer_text_input", c.use_qformer_text_input);
    if (f.find("encoder_hidden_size")) {
      index_t e = 0;
      f.get("encoder_hidden_size", e);
      encoder_hidden_from_qformer = e;
      c.encoder_hidden_size = e;
    }
  }
  if (const auto* v = section("vision_config")) {
    cfg.vision_config = *v;
    detail::config_fields f(*v, src, "vision_config");
    if (f.find("hidden_size")) {
      index_t width = 0;
      f.get("hidden_size", width);
      if (encoder_hidden_from_qformer && *encoder_hidden_from_qformer != width)
        top.fail("qformer_config.encoder_hidden_size = ", *encoder_hidden_from_qformer,
                 " differs from vision_config.hidden_size = ", width,
                 " (the Q-Former cross-attends to the vision model's output)");
      cfg.qformer.encoder_hidden_size = width;
    }
    // ---- vision_config fields (Blip2VisionConfig; absent fields keep the EVA ViT-g/14 defaults) ----
    auto& vc = cfg.vision;
    f.get("hidden_size", vc.hidden_size);
    f.get("intermediate_size", vc.intermediate_size);
    f.get("num_attention_heads", vc.num_attention_heads);
    f.get("num_hidden_layers", vc.num_hidden_layers);
    f.get("patch_size", vc.patch_size);
    f.get("image_size", vc.image_size);
    f.get("layer_norm_eps", vc.layer_norm_eps);
    f.get("hidden_act", vc.hidden_act);
    f.get("qkv_bias", vc.qkv_bias);
    // ---- end vision_config fields ----
  }
  if (const auto* t = section("text_config")) cfg.text_config = *t;

  validate_blip2_config(cfg, source);
  return cfg;
}

// From a file (config.json of a Blip2 checkpoint).
inline blip2_config load_blip2_config(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    detail::raise<format_error>("Hugging Face config '", path.string(), "': no such file");
  if (!std::filesystem::is_regular_file(status))
    detail::raise<format_error>("Hugging Face config '", path.string(), "': not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::raise<format_error>("Hugging Face config '", path.string(), "': cannot open the file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) detail::raise<format_error>("Hugging Face config '", path.string(), "': read error");
  // nlohmann's lexer takes a NUL byte for the end of input; JSON text never contains one.
  if (const auto nul = text.find('\0'); nul != std::string::npos)
    detail::raise<format_error>("Hugging Face config '", path.string(), "': not valid JSON (NUL byte at byte ", nul, ")");
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    detail::raise<format_error>("Hugging Face config '", path.string(), "': not valid JSON (near byte ",
                                e.byte > 0 ? e.byte - 1 : 0, "): ", e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. out_of_range 406: 1e400 overflows a double
    detail::raise<format_error>("Hugging Face config '", path.string(), "': not valid JSON: ", e.what());
  }
  return parse_blip2_config(root, path.string());
}

// ---- vision_config (the frozen image encoder) ----
// The image encoder's configuration from a config.json, checked (check_vision_config: sizes >= 1, width
// divisible by heads, image_size a multiple of patch_size, eps > 0, hidden_act "gelu"); format_error
// names the file and the field.
inline vision_config load_vision_config(const std::filesystem::path& path) {
  const blip2_config cfg = load_blip2_config(path);
  check_vision_config(cfg.vision, path.string());
  return cfg.vision;
}
// ---- end vision_config ----

// The Q-Former model's configuration (models/qformer/config.hpp) from a checkpoint's: `with_text` is true for
// a Blip2ForImageTextRetrieval checkpoint (text embeddings, text FFNs, ITC/ITM heads), false for
// Blip2ForConditionalGeneration.
inline qformer_model_config to_model_config(const blip2_config& cfg, bool with_text = true) {
  return {cfg.qformer, cfg.num_query_tokens, cfg.image_text_hidden_size, with_text};
}

}  // namespace blip2
