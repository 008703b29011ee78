// blip2/io/opt_tokenizer.hpp: the tokenizer of OPT and BLIP-2 OPT checkpoints: GPT-2's byte-level BPE
// (blip2/io/byte_bpe_tokenizer.hpp) with the options of a Hugging Face tokenizer_config.json. Needs only C++20.
//
//   auto tok = blip2::io::load_opt_tokenizer("blip2-opt-2.7b");  // vocab.json, merges.txt, tokenizer_config.json
//   tok.encode("a photo of")            // {2, ...}: BOS </s> first (add_bos_token)
//   tok.encode("")                      // {2}
//   tok.token_id("\n")                  // 50118, LAVIS's end-of-caption token
//   tok.decode(ids, true)               // without </s>, <pad> and the other special tokens
//
// What is read from tokenizer_config.json (anything else is ignored, as GPT2Tokenizer ignores it):
//   add_bos_token, add_prefix_space, clean_up_tokenization_spaces   booleans
//   bos_token, eos_token, unk_token, pad_token    a string, null (none), or an AddedToken object
//                                                 {"content": ..., "lstrip": ..., "rstrip": ...}
//   added_tokens_decoder     {"<id>": {"content", "special", "lstrip", "rstrip", ...}} (transformers >= 4.34)
//   additional_special_tokens  strings or AddedToken objects, split out of the text, special
//   errors                   must be "replace" (the only decoding implemented)
// and added_tokens.json beside it when present ({"<image>": 50265}: added, not special). A token with
// "single_word": true is refused (not implemented); every error names the file and the line.
// A field the config does not name takes GPT2Tokenizer's default: add_bos_token false, no pad, and
// bos/eos/unk "<|endoftext|>" when the vocabulary has that token (GPT-2's), else none.
// clean_up_tokenization_spaces: the config's value, else false (see byte_bpe_tokenizer.hpp; LAVIS's pinned
// transformers 4.33 would clean up: set options.clean_up_tokenization_spaces to reproduce it).
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

#include "blip2/core/errors.hpp"
#include "blip2/io/byte_bpe_tokenizer.hpp"
#include "blip2/io/mini_json.hpp"

namespace blip2::io {

// The options of facebook/opt-*'s tokenizer_config.json: BOS </s> prepended, bos = eos = unk = </s>, pad
// <pad>. What load_opt_tokenizer uses for a directory without a tokenizer_config.json.
inline byte_bpe_options opt_tokenizer_options() {
  byte_bpe_options o;
  o.add_bos_token = true;
  o.bos_token = o.eos_token = o.unk_token = "</s>";
  o.pad_token = "<pad>";
  return o;
}

// GPT2Tokenizer's constructor defaults (bos = eos = unk = <|endoftext|>, nothing added to the ids).
inline byte_bpe_options gpt2_tokenizer_options() {
  byte_bpe_options o;
  o.bos_token = o.eos_token = o.unk_token = "<|endoftext|>";
  return o;
}

namespace detail {

inline bool config_bool(const json::value& v, std::string_view key, const std::string& where) {
  BLIP2_CHECK(v.type == json::value::kind::boolean, format_error, where, ": line ", v.line, ": \"", key,
              "\" must be true or false, not ", json::value::kind_name(v.type));
  return v.boolean;
}

// An AddedToken written as a string or as an object; `key` names it in messages.
inline bpe_added_token config_token(const json::value& v, std::string_view key, const std::string& where) {
  bpe_added_token a;
  if (v.type == json::value::kind::string) {
    a.content = v.text;
    return a;
  }
  BLIP2_CHECK(v.type == json::value::kind::object, format_error, where, ": line ", v.line, ": \"", key,
              "\" must be a string or an AddedToken object, not ", json::value::kind_name(v.type));
  const auto* content = v.find("content");
  BLIP2_CHECK(content && content->type == json::value::kind::string && !content->text.empty(), format_error, where,
              ": line ", v.line, ": \"", key, "\" needs a non-empty string \"content\"");
  a.content = content->text;
  if (const auto* f = v.find("lstrip"); f && f->type != json::value::kind::null) a.lstrip = config_bool(*f, "lstrip", where);
  if (const auto* f = v.find("rstrip"); f && f->type != json::value::kind::null) a.rstrip = config_bool(*f, "rstrip", where);
  if (const auto* f = v.find("special"); f && f->type != json::value::kind::null) a.special = config_bool(*f, "special", where);
  const auto* single = v.find("single_word");
  BLIP2_CHECK(!single || single->type != json::value::kind::boolean || !single->boolean, format_error, where, ": line ",
              single ? single->line : v.line, ": \"", key, "\" (\"", a.content,
              "\") has single_word: true, which this tokenizer does not implement");
  return a;
}

}  // namespace detail

// Options from the text of a tokenizer_config.json (see the header comment); fields it does not name keep
// their value in `defaults`. `name` appears in error messages.
inline byte_bpe_options parse_tokenizer_config(std::string_view text, const std::string& name,
                                               byte_bpe_options defaults = {}) {
  const std::string where = "tokenizer config '" + name + "'";
  const auto doc = json::parse(text, where);
  BLIP2_CHECK(doc.type == json::value::kind::object, format_error, where, ": line ", doc.line,
              ": expected a JSON object, found ", json::value::kind_name(doc.type));
  byte_bpe_options o = std::move(defaults);
  if (const auto* v = doc.find("add_bos_token")) o.add_bos_token = detail::config_bool(*v, "add_bos_token", where);
  if (const auto* v = doc.find("add_prefix_space")) o.add_prefix_space = detail::config_bool(*v, "add_prefix_space", where);
  if (const auto* v = doc.find("clean_up_tokenization_spaces"))
    o.clean_up_tokenization_spaces = detail::config_bool(*v, "clean_up_tokenization_spaces", where);
  if (const auto* v = doc.find("errors"))
    BLIP2_CHECK(v->type == json::value::kind::string && v->text == "replace", format_error, where, ": line ", v->line,
                ": \"errors\" must be \"replace\" (the only UTF-8 error handling implemented)");
  const std::pair<const char*, std::string*> names[] = {
      {"bos_token", &o.bos_token}, {"eos_token", &o.eos_token}, {"unk_token", &o.unk_token}, {"pad_token", &o.pad_token}};
  for (const auto& [key, target] : names) {
    const auto* v = doc.find(key);
    if (!v) continue;
    if (v->type == json::value::kind::null) {
      target->clear();
      continue;
    }
    auto a = detail::config_token(*v, key, where);
    *target = a.content;
    a.special = true;
    if (a.lstrip || a.rstrip) o.added_tokens.push_back(a);  // keeps its stripping; the name adds it otherwise
  }
  if (const auto* v = doc.find("added_tokens_decoder"); v && v->type != json::value::kind::null) {
    BLIP2_CHECK(v->type == json::value::kind::object, format_error, where, ": line ", v->line,
                ": \"added_tokens_decoder\" must be an object id -> AddedToken");
    for (const auto& [key, t] : v->members) {
      json::value id;
      id.type = json::value::kind::number;
      id.text = key;
      const auto n = id.integer();
      BLIP2_CHECK(n && *n >= 0 && *n < (std::int64_t{1} << 31), format_error, where, ": line ", t.line,
                  ": added_tokens_decoder key \"", key, "\" is not an id in [0, 2^31)");
      auto a = detail::config_token(t, "added_tokens_decoder", where);
      BLIP2_CHECK(t.type == json::value::kind::object, format_error, where, ": line ", t.line,
                  ": an added_tokens_decoder entry must be an AddedToken object");
      a.id = *n;
      o.added_tokens.push_back(a);
    }
  }
  if (const auto* v = doc.find("additional_special_tokens"); v && v->type != json::value::kind::null) {
    BLIP2_CHECK(v->type == json::value::kind::array, format_error, where, ": line ", v->line,
                ": \"additional_special_tokens\" must be an array");
    for (const auto& t : v->items) {
      auto a = detail::config_token(t, "additional_special_tokens", where);
      a.special = true;
      o.added_tokens.push_back(a);
    }
  }
  return o;
}

namespace detail {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) blip2::detail::raise<format_error>("'", path.string(), "': cannot open: ", std::strerror(errno));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// added_tokens.json: {"token": id, ...}, added (not special).
inline void read_added_tokens_json(const std::filesystem::path& path, byte_bpe_options& o) {
  const std::string where = "added tokens '" + path.string() + "'";
  const auto doc = json::parse(read_text_file(path), where);
  BLIP2_CHECK(doc.type == json::value::kind::object, format_error, where, ": expected a JSON object token -> id");
  for (const auto& [token, v] : doc.members) {
    const auto id = v.integer();
    BLIP2_CHECK(id && *id >= 0 && *id < (std::int64_t{1} << 31), format_error, where, ": line ", v.line, ": the id of \"",
                token, "\" must be an integer in [0, 2^31)");
    bpe_added_token a;
    a.content = token;
    a.id = *id;
    a.special = false;
    o.added_tokens.push_back(a);
  }
}

inline byte_bpe_tokenizer load_with_config(const std::filesystem::path& vocab, const std::filesystem::path& merges,
                                           const std::filesystem::path& dir, const byte_bpe_options* without_config) {
  const auto plain = byte_bpe_tokenizer::from_files(vocab, merges);
  const auto config = dir / "tokenizer_config.json", added = dir / "added_tokens.json";
  byte_bpe_options o;
  if (std::filesystem::exists(config) || !without_config) {
    if (plain.find("<|endoftext|>")) o = gpt2_tokenizer_options();
    if (std::filesystem::exists(config)) o = parse_tokenizer_config(read_text_file(config), config.string(), o);
  } else {
    o = *without_config;
  }
  if (std::filesystem::exists(added)) read_added_tokens_json(added, o);
  return plain.with_options(o);
}

}  // namespace detail

// OPT's tokenizer from a checkpoint directory: vocab.json and merges.txt, tokenizer_config.json and
// added_tokens.json when present (without a tokenizer_config.json: opt_tokenizer_options()).
inline byte_bpe_tokenizer load_opt_tokenizer(const std::filesystem::path& dir) {
  const auto defaults = opt_tokenizer_options();
  return detail::load_with_config(dir / "vocab.json", dir / "merges.txt", dir, &defaults);
}

// Any byte-level BPE from its two files, with the tokenizer_config.json (and added_tokens.json) of
// vocab.json's directory when present, else GPT2Tokenizer's defaults: what `tokenize --vocab --merges` loads.
inline byte_bpe_tokenizer load_byte_bpe_tokenizer(const std::filesystem::path& vocab_json,
                                                  const std::filesystem::path& merges_txt) {
  return detail::load_with_config(vocab_json, merges_txt, vocab_json.parent_path(), nullptr);
}

}  // namespace blip2::io
