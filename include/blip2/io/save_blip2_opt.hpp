// blip2/io/save_blip2_opt.hpp: write Hugging Face checkpoint directories from C++ models: a
// Blip2ForConditionalGeneration (OPT) directory that load_blip2_opt, load_vision_model, load_opt_tokenizer
// and so the caption and vqa programs read back, and an OPTForCausalLM directory (a language model alone,
// e.g. one pretrained on text before stage 2). Needs nlohmann_json; POSIX.
//
//   blip2::save_blip2_opt("out/blip2", vit, model, bpe.files());                 // bpe: io/bpe_trainer.hpp
//   blip2::save_opt_lm("out/lm", llm, blip2::io::read_bpe_tokenizer_files("out/blip2"));
//   auto llm2 = blip2::load_opt_lm("out/lm");
//
// Blip2ForConditionalGeneration directory:
//   config.json            a Blip2Config: model_type "blip-2", architectures, num_query_tokens,
//                          image_text_hidden_size, qformer_config (use_qformer_text_input false),
//                          vision_config, text_config (a full OPTConfig dict, as transformers writes one),
//                          tie_word_embeddings, use_decoder_only_language_model, torch_dtype
//   model.safetensors      metadata {"format": "pt"} (transformers refuses a file without it); F32 for a
//                          float model, F64 for double:
//       vision_model.*                   every parameter of the vision_model (models/vit)
//       query_tokens, qformer.*          the query path only, the names Blip2ForConditionalGeneration has:
//                                        a Q-Former made with its text side (stage 1) loses the word and
//                                        position embeddings, the text FFNs, the projections, the ITM head
//                                        and the stage-1 heads here
//       language_projection.{weight, bias}
//       language_model.model.decoder.*   the decoder; language_model.lm_head.weight only when untied
//                                        (transformers does not save a tied head)
//   vocab.json, merges.txt, tokenizer_config.json (, added_tokens.json)   the tokenizer files, as given
// OPTForCausalLM directory: config.json = the OPTConfig dict (architectures ["OPTForCausalLM"]),
// model.safetensors with model.decoder.* (and lm_head.weight when untied), the tokenizer files.
//
// Checked before anything is written (value_error): the Q-Former cross-attends to the vision width, the
// projection maps the Q-Former width to the decoder's word width, the decoder still has its float weights
// (not dropped by store_bfloat16(false)), its LayerNorm eps is OPT's 1e-5 (OPTConfig has no field for
// another), and the tokenizer files load (format_error otherwise) with no more ids than the embedding has
// rows.
//
// Atomic: everything is written into a temporary directory beside the target ("<dir>.tmp.<pid>"), each
// file fsynced, and the temporary directory is then renamed to the target, so a reader sees either no
// directory or a complete one; on any failure the temporary directory is removed and the target is left
// as it was. When the target exists: without options.overwrite that is a value_error (nothing written);
// with it, on Linux the new directory and the old one are swapped in one step (renameat2 RENAME_EXCHANGE)
// and the old one is then deleted; where the file system cannot swap, the old directory is first renamed
// to "<dir>.old.<pid>", the new one renamed into place and the old one deleted (a crash between the two
// renames leaves the target missing, with both complete directories beside it). A model loaded from the
// old directory keeps working: its mapped files stay valid until unmapped. A target that is a file or a
// symbolic link is refused.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/bpe_trainer.hpp"
#include "blip2/io/checkpoint_files.hpp"
#include "blip2/io/opt_checkpoint.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/blip2_opt/model.hpp"
#include "blip2/models/vit/vision_transformer.hpp"

namespace blip2 {

struct save_checkpoint_options {
  bool overwrite = false;  // replace an existing directory (see the header comment)
};

namespace detail {

template <class T>
constexpr const char* torch_dtype_name() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "save: float or double models only");
  return std::is_same_v<T, float> ? "float32" : "float64";
}

// transformers' OPTConfig as a dict (the fields make_stage2_fixtures.py writes; parse_opt_config reads them).
inline nlohmann::json opt_config_json(const opt_config& c, const char* torch_dtype) {
  return {{"_remove_final_layer_norm", c.remove_final_layer_norm},
          {"activation_dropout", 0.0},
          {"activation_function", c.activation_function},
          {"architectures", {"OPTForCausalLM"}},
          {"attention_dropout", c.attention_dropout},
          {"bos_token_id", c.bos_token_id},
          {"do_layer_norm_before", c.do_layer_norm_before},
          {"dropout", c.dropout},
          {"enable_bias", c.enable_bias},
          {"eos_token_id", c.eos_token_id},
          {"ffn_dim", c.ffn_dim},
          {"hidden_size", c.hidden_size},
          {"init_std", 0.02},
          {"layer_norm_elementwise_affine", c.layer_norm_elementwise_affine},
          {"layerdrop", 0.0},
          {"max_position_embeddings", c.max_position_embeddings},
          {"model_type", "opt"},
          {"num_attention_heads", c.num_attention_heads},
          {"num_hidden_layers", c.num_hidden_layers},
          {"pad_token_id", c.pad_token_id},
          {"prefix", "</s>"},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"torch_dtype", torch_dtype},
          {"use_cache", true},
          {"vocab_size", c.vocab_size},
          {"word_embed_proj_dim", c.word_embed_proj_dim}};
}

// Blip2QFormerConfig (without a text input: Blip2ForConditionalGeneration's query path).
inline nlohmann::json qformer_config_json(const qformer_config& q) {
  nlohmann::json j = {{"attention_probs_dropout_prob", q.attention_probs_dropout_prob},
                      {"cross_attention_frequency", q.cross_attention_frequency},
                      {"encoder_hidden_size", q.encoder_hidden_size},
                      {"hidden_act", q.hidden_act},
                      {"hidden_dropout_prob", q.hidden_dropout_prob},
                      {"hidden_size", q.hidden_size},
                      {"initializer_range", q.initializer_range},
                      {"intermediate_size", q.intermediate_size},
                      {"layer_norm_eps", q.layer_norm_eps},
                      {"max_position_embeddings", q.max_position_embeddings},
                      {"model_type", "blip_2_qformer"},
                      {"num_attention_heads", q.num_attention_heads},
                      {"num_hidden_layers", q.num_hidden_layers},
                      {"position_embedding_type", q.position_embedding_type},
                      {"use_qformer_text_input", false},
                      {"vocab_size", q.vocab_size}};
  j["pad_token_id"] = q.pad_token_id ? nlohmann::json(*q.pad_token_id) : nlohmann::json(nullptr);
  if (q.bos_token_id) j["bos_token_id"] = *q.bos_token_id;
  return j;
}

inline nlohmann::json vision_config_json(const vision_config& v) {
  return {{"hidden_act", v.hidden_act},
          {"hidden_size", v.hidden_size},
          {"image_size", v.image_size},
          {"intermediate_size", v.intermediate_size},
          {"layer_norm_eps", v.layer_norm_eps},
          {"model_type", "blip_2_vision_model"},
          {"num_attention_heads", v.num_attention_heads},
          {"num_hidden_layers", v.num_hidden_layers},
          {"patch_size", v.patch_size},
          {"qkv_bias", v.qkv_bias}};
}

// A view that has data, else value_error naming the tensor.
template <class View>
safetensors_entry named_entry(const std::string& name, View& v) {
  BLIP2_CHECK(v.data() != nullptr || v.size() == 0, value_error, "save: tensor '", name,
              "' has no data (a decoder whose float weights store_bfloat16(false) dropped cannot be saved)");
  return safetensors_entry::of(name, v);
}

// The decoder's parameters under prefix (a tied lm_head is not a parameter of its own: not written).
template <class T>
void append_opt_entries(std::vector<safetensors_entry>& out, const opt_model<T>& llm, const std::string& prefix) {
  const auto& c = llm.config();
  BLIP2_CHECK(c.layer_norm_eps == 1e-5, value_error, "save: the decoder's layer_norm_eps is ", c.layer_norm_eps,
              "; a Hugging Face OPTConfig has no field for it (modeling_opt.py uses 1e-5), so it would not load back");
  auto w = llm.w;  // a copy of the views: for_each_opt_parameter takes them mutable
  for_each_opt_parameter(c, w, [&](const std::string& name, auto& v) { out.push_back(named_entry(name, v)); }, prefix);
}

// Writes `text` to `path` and fsyncs it; format_error naming the step on failure.
inline void write_synced(const std::filesystem::path& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) raise<format_error>("save '", path.string(), "': cannot create: ", std::strerror(errno));
  auto fail = [&](const char* step) {
    const int err = errno;
    ::close(fd);
    raise<format_error>("save '", path.string(), "': ", step, " failed: ", std::strerror(err));
  };
  for (std::size_t at = 0; at < text.size();) {
    const ::ssize_t n = ::write(fd, text.data() + at, text.size() - at);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    at += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) raise<format_error>("save '", path.string(), "': close failed: ", std::strerror(errno));
}

inline void fsync_directory(const std::filesystem::path& dir) {  // best effort, as save_safetensors does
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

inline void write_tokenizer_files(const std::filesystem::path& dir, const io::bpe_tokenizer_files& t) {
  write_synced(dir / "vocab.json", t.vocab_json);
  write_synced(dir / "merges.txt", t.merges_txt);
  if (!t.tokenizer_config_json.empty()) write_synced(dir / "tokenizer_config.json", t.tokenizer_config_json);
  if (!t.added_tokens_json.empty()) write_synced(dir / "added_tokens.json", t.added_tokens_json);
}

// The tokenizer written in `dir` loads, and its ids fit an embedding of vocab_size rows.
inline void check_written_tokenizer(const std::filesystem::path& dir, index_t vocab_size) {
  const auto tok = io::load_opt_tokenizer(dir);
  BLIP2_CHECK(static_cast<index_t>(tok.size()) <= vocab_size, value_error, "save: the tokenizer has ", tok.size(),
              " ids but the decoder's embedding has ", vocab_size, " rows (vocab_size): they do not belong together");
}

// Makes `dir` by fill(temporary directory), atomically (see the header comment).
template <class Fill>
void write_directory_atomically(const std::filesystem::path& dir, const save_checkpoint_options& options, Fill&& fill) {
  namespace fs = std::filesystem;
  const fs::path target = dir.has_filename() ? dir : dir.parent_path();  // "out/" -> "out"
  BLIP2_CHECK(!target.empty(), value_error, "save: an empty directory name");
  std::error_code ec;
  const auto st = fs::symlink_status(target, ec);
  const bool exists = fs::exists(st);
  BLIP2_CHECK(!exists || fs::is_directory(st), value_error, "save: '", target.string(), "' exists and is ",
              fs::is_symlink(st) ? "a symbolic link" : "not a directory", "; refusing to replace it");
  BLIP2_CHECK(!exists || options.overwrite, value_error, "save: the directory '", target.string(),
              "' exists; pass overwrite = true to replace it");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) raise<format_error>("save '", target.string(), "': cannot create '", parent.string(), "': ", ec.message());
  fs::path tmp = target, old = target;
  tmp += ".tmp." + std::to_string(::getpid());
  old += ".old." + std::to_string(::getpid());
  fs::remove_all(tmp, ec);  // a leftover of an earlier, interrupted save by a process of the same id
  if (!fs::create_directory(tmp, ec))
    raise<format_error>("save '", target.string(), "': cannot create the temporary directory '", tmp.string(), "': ",
                        ec ? ec.message() : std::string("it exists"));
  try {
    fill(tmp);
    fsync_directory(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  auto give_up = [&](const char* step, int err) {
    fs::remove_all(tmp, ec);
    raise<format_error>("save '", target.string(), "': ", step, " failed: ", std::strerror(err));
  };
  if (!exists) {
    if (::rename(tmp.c_str(), target.c_str()) != 0) give_up("rename of the temporary directory", errno);
  } else {
    bool swapped = false;
#if defined(__linux__) && defined(RENAME_EXCHANGE)
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
      swapped = true;
      fs::remove_all(tmp, ec);  // now the old directory
    } else if (errno != EINVAL && errno != ENOSYS) {
      give_up("exchange with the existing directory", errno);
    }
#endif
    if (!swapped) {
      if (::rename(target.c_str(), old.c_str()) != 0) give_up("moving the existing directory aside", errno);
      if (::rename(tmp.c_str(), target.c_str()) != 0) {
        const int err = errno;
        (void)::rename(old.c_str(), target.c_str());
        give_up("rename of the temporary directory", err);
      }
      fs::remove_all(old, ec);
    }
  }
  fsync_directory(parent);
}

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) raise<format_error>("'", path.string(), "': cannot open: ", std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    raise<format_error>("'", path.string(), "': not valid JSON: ", e.what());
  }
}

}  // namespace detail

// A Blip2ForConditionalGeneration directory from the image encoder, the Q-Former (its query path), the
// projection and the decoder, plus the tokenizer files (see the header comment).
template <class T>
void save_blip2_opt(const std::filesystem::path& dir, const vision_model<T>& vit, const qformer_model<T>& qformer,
                    const language_projection<T>& projection, const opt_model<T>& llm,
                    const io::bpe_tokenizer_files& tokenizer, const save_checkpoint_options& options = {}) {
  const auto& vc = vit.config();
  const auto& mc = qformer.config();
  const auto& oc = llm.config();
  const index_t C = mc.qformer.hidden_size, Dw = oc.word_embed_proj_dim;
  BLIP2_CHECK(mc.qformer.encoder_hidden_size == vc.hidden_size, value_error, "save_blip2_opt: the Q-Former cross-attends to ",
              mc.qformer.encoder_hidden_size, "-wide image embeddings but the vision model is ", vc.hidden_size, " wide");
  BLIP2_CHECK(projection.w.weight.extent(0) == Dw && projection.w.weight.extent(1) == C, value_error,
              "save_blip2_opt: language_projection.weight has shape ", shape_string(projection.w.weight),
              " but the Q-Former width ", C, " and the decoder's word_embed_proj_dim ", Dw, " need (", Dw, ", ", C, ")");

  std::vector<safetensors_entry> entries;
  auto v = vit.w;
  for_each_vision_parameter(vc, v, [&](const std::string& name, auto& t) { entries.push_back(detail::named_entry(name, t)); });
  qformer_model_config query_path = mc;  // Blip2ForConditionalGeneration's names: no text side, no stage-1 heads
  query_path.with_text = false;
  query_path.with_stage1_heads = false;
  auto q = qformer.w;
  for_each_parameter(query_path, q, [&](const std::string& name, auto& t) { entries.push_back(detail::named_entry(name, t)); });
  auto p = projection.w;
  entries.push_back(detail::named_entry("language_projection.weight", p.weight));
  entries.push_back(detail::named_entry("language_projection.bias", p.bias));
  detail::append_opt_entries(entries, llm, "language_model.");

  constexpr const char* dtype = detail::torch_dtype_name<T>();
  nlohmann::json cfg = {{"architectures", {"Blip2ForConditionalGeneration"}},
                        {"image_text_hidden_size", mc.image_text_hidden_size},
                        {"initializer_factor", 1.0},
                        {"initializer_range", 0.02},
                        {"model_type", "blip-2"},
                        {"num_query_tokens", mc.num_query_tokens},
                        {"qformer_config", detail::qformer_config_json(mc.qformer)},
                        {"text_config", detail::opt_config_json(oc, dtype)},
                        {"tie_word_embeddings", oc.tie_word_embeddings},
                        {"torch_dtype", dtype},
                        {"use_decoder_only_language_model", true},
                        {"vision_config", detail::vision_config_json(vc)}};
  detail::write_directory_atomically(dir, options, [&](const std::filesystem::path& tmp) {
    detail::write_tokenizer_files(tmp, tokenizer);
    detail::check_written_tokenizer(tmp, oc.vocab_size);
    detail::write_synced(tmp / "config.json", cfg.dump(2) + "\n");
    save_safetensors(tmp / "model.safetensors", entries, {{"format", "pt"}});
  });
}

template <class T>
void save_blip2_opt(const std::filesystem::path& dir, const vision_model<T>& vit, const blip2_opt_model<T>& m,
                    const io::bpe_tokenizer_files& tokenizer, const save_checkpoint_options& options = {}) {
  save_blip2_opt(dir, vit, m.qformer, m.projection, m.llm, tokenizer, options);
}

// An OPTForCausalLM directory: the decoder alone, with its tokenizer (see the header comment).
template <class T>
void save_opt_lm(const std::filesystem::path& dir, const opt_model<T>& llm, const io::bpe_tokenizer_files& tokenizer,
                 const save_checkpoint_options& options = {}) {
  std::vector<safetensors_entry> entries;
  detail::append_opt_entries(entries, llm, "");
  const nlohmann::json cfg = detail::opt_config_json(llm.config(), detail::torch_dtype_name<T>());
  detail::write_directory_atomically(dir, options, [&](const std::filesystem::path& tmp) {
    detail::write_tokenizer_files(tmp, tokenizer);
    detail::check_written_tokenizer(tmp, llm.config().vocab_size);
    detail::write_synced(tmp / "config.json", cfg.dump(2) + "\n");
    save_safetensors(tmp / "model.safetensors", entries, {{"format", "pt"}});
  });
}

// The decoder of an OPTForCausalLM directory (config.json an OPTConfig; model.safetensors or its shards,
// names model.decoder.*), float32 viewed in place as load_opt_model does. The tokenizer: load_opt_tokenizer(dir).
template <class T = float>
opt_model<T> load_opt_lm(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  const opt_config cfg = parse_opt_config(detail::read_json_file(path), path.string());
  auto files = std::make_shared<const std::vector<safetensors_file>>(open_checkpoint_files(dir));
  return load_opt_model<T>(cfg, std::move(files), "");
}

}  // namespace blip2
