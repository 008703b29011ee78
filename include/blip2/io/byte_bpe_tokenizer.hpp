// blip2/io/byte_bpe_tokenizer.hpp: GPT-2's byte-level BPE tokenizer (vocab.json + merges.txt), the one OPT
// and so BLIP-2 OPT use, as Hugging Face's GPT2Tokenizer (the slow one LAVIS loads) and its Rust tokenizers
// behave. OPT's specials (BOS </s>, <pad>) from a tokenizer_config.json: blip2/io/opt_tokenizer.hpp.
// Needs only C++20.
//
//   auto tok = blip2::io::byte_bpe_tokenizer::from_files("gpt2/vocab.json", "gpt2/merges.txt");
//   tok.encode("Hello world")      // {15496, 995} with GPT-2's files
//   tok.decode(ids)                // "Hello world"
//   tok.token_id("\n")             // 198: the id of the single token "\n" encodes to (50118 for OPT)
//
// encode(text), in Hugging Face's order (tokenization_gpt2.py, tokenization_utils.py):
//   0. Invalid UTF-8 is replaced first, each maximal invalid subpart by U+FFFD, as Python's
//      bytes.decode(errors="replace") does: the tokenizer sees the str Python would have handed it.
//   1. Added and special tokens (options.added_tokens plus the bos/eos/unk/pad names) are split out of the
//      text before anything else, leftmost-longest (HF's Trie, Rust's LeftmostLongest). A token with rstrip
//      (lstrip) eats the str.isspace() whitespace after (before) it. options.add_prefix_space puts a ' '
//      before the text.
//   2. Every other piece is pre-tokenized by GPT-2's pattern, as the `regex` module (not `re`) runs it:
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      the alternatives tried in that order at each position (hand-written below, no std::regex). The
//      contractions are case-sensitive with the ASCII apostrophe only; \s is Unicode White_Space (U+0085
//      and U+00A0 yes, U+001C..U+001F no), \p{L} and \p{N} the categories L* and N* (unicode_tables.hpp).
//      `\s+(?!\S)` leaves the last white space of a run for the next word: "a  b" -> "a", " ", " b".
//   3. A pre-token's UTF-8 bytes map through bytes_to_unicode (GPT-2's table: the 188 printable bytes
//      stand for themselves, the other 68 become U+0100.. in byte order; ' ' -> U+0120 'Ġ'), one symbol a
//      byte. Then BPE: the adjacent pair of lowest rank (its line in merges.txt) is merged, every
//      non-overlapping occurrence left to right, until no adjacent pair has a rank. Results are cached
//      per pre-token (at most cache_limit entries, then the cache starts afresh).
//   4. With add_special_tokens and options.add_bos_token, BOS's id goes first (OPT: "" -> {2}).
// decode(ids, skip_special_tokens): the tokens' characters map back to bytes (a token with a character
// outside the table, e.g. an added "<image>" written as such, gives its own UTF-8, as Rust's ByteLevel
// decoder does), the bytes decode as UTF-8 with each maximal invalid subpart -> U+FFFD (Python's
// errors="replace"), then, with options.clean_up_tokenization_spaces, Hugging Face's clean-up: " ." -> ".",
// " ?", " !", " ,", " ' " -> "'", " n't", " 'm", " 's", " 've", " 're" (in that order). Its default is false:
// decode is then the exact inverse of encode on valid UTF-8, as in transformers >= 4.45 and Rust's
// tokenizers; transformers < 4.45 (LAVIS pins 4.33) cleaned up unless the config said otherwise.
//
// Files (each error a blip2::format_error naming the file and line):
//   vocab.json  a JSON object token -> id; ids are integers in [0, 2^31), each used once, tokens distinct;
//               every one of the 256 byte symbols must be there (so encode never meets an unknown symbol).
//   merges.txt  "A B" a line (split on white space, exactly two symbols), rank = order; a first line
//               starting with "#version" is a header; blank lines are skipped; the last line counts even
//               without a newline (Rust does; the slow tokenizer's split("\n")[1:-1] would drop it). A, B and
//               AB must be in vocab.json. A pair listed twice keeps its last rank (both HF tokenizers do).
//   Options naming a token that neither vocab.json nor an added token's id gives are a value_error.
// A tokenizer is cheap to copy (the tables are shared) and its const members may be called from several
// threads (the cache takes a mutex).
#pragma once
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/io/mini_json.hpp"
#include "blip2/io/unicode_tables.hpp"
#include "blip2/io/utf8.hpp"

namespace blip2::io {

// ---- GPT-2's byte <-> symbol table and the classes of its pattern ----
namespace byte_bpe {

// bytes_to_unicode(): byte -> code point of its symbol.
inline constexpr std::array<char32_t, 256> byte_to_symbol = [] {
  std::array<char32_t, 256> t{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return t;
}();

// The inverse: code point (< 0x144) -> byte, -1 for a code point that is no symbol.
inline constexpr std::array<std::int16_t, 0x144> symbol_to_byte = [] {
  std::array<std::int16_t, 0x144> t{};
  for (auto& v : t) v = -1;
  for (int b = 0; b < 256; ++b) t[byte_to_symbol[b]] = static_cast<std::int16_t>(b);
  return t;
}();

constexpr std::uint8_t class_from_table(char32_t cp) {
  const std::uint32_t key = (static_cast<std::uint32_t>(cp) << 8) | 0xFFu;
  const auto* it = std::upper_bound(std::begin(unicode::bpe_class_ranges), std::end(unicode::bpe_class_ranges), key);
  return static_cast<std::uint8_t>(*(it - 1) & 0xFFu);
}
inline constexpr auto ascii_classes = [] {
  std::array<std::uint8_t, 128> a{};
  for (char32_t c = 0; c < 128; ++c) a[c] = class_from_table(c);
  return a;
}();
// unicode::bpe_space (\s), bpe_letter (\p{L}), bpe_number (\p{N}) or bpe_other.
constexpr std::uint8_t char_class(char32_t cp) {
  if (cp < 128) return ascii_classes[cp];
  return cp > 0x10FFFF ? unicode::bpe_other : class_from_table(cp);
}

// str.isspace() (the white space str.strip() removes around an added token with lstrip/rstrip).
inline bool py_space(char32_t cp) {
  const std::uint32_t key = (static_cast<std::uint32_t>(cp) << 8) | 0xFFu;
  const auto* it = std::upper_bound(std::begin(unicode::flag_ranges), std::end(unicode::flag_ranges), key);
  return cp <= 0x10FFFF && (*(it - 1) & unicode::flag_py_space) != 0;
}

// Calls on_piece(std::string_view) for each match of GPT-2's pattern in `s` (valid UTF-8), in order; the
// matches cover all of `s`.
template <class OnPiece>
void pretokenize(std::string_view s, OnPiece&& on_piece) {
  const std::size_t n = s.size();
  auto cls = [&](std::size_t i) { return char_class(utf8_decode_step(s, i).code_point); };
  auto run = [&](std::size_t i, std::uint8_t c) {  // end of the run of class c from i
    while (i < n && cls(i) == c) i += utf8_decode_step(s, i).length;
    return i;
  };
  for (std::size_t i = 0; i < n;) {
    std::size_t end = 0;
    const std::uint8_t c = cls(i);
    if (s[i] == '\'') {  // 's|'t|'re|'ve|'m|'ll|'d (no one is a prefix of another: order is moot)
      for (std::string_view k : {"s", "t", "re", "ve", "m", "ll", "d"})
        if (s.substr(i + 1, k.size()) == k) end = i + 1 + k.size();
    }
    if (end == 0 && s[i] == ' ' && i + 1 < n && cls(i + 1) != unicode::bpe_space) {
      end = run(i + 1, cls(i + 1));  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' with the space
    } else if (end == 0 && c != unicode::bpe_space) {
      end = run(i, c);  // the same three without the space
    } else if (end == 0) {
      const std::size_t j = run(i, unicode::bpe_space);
      std::size_t last = j - 1;  // the start of the run's last code point
      while ((static_cast<unsigned char>(s[last]) & 0xC0) == 0x80) --last;
      // '\s+(?!\S)': the whole run at the end of the text, else all but its last code point; '\s+' for one
      end = (j == n || last == i) ? j : last;
    }
    on_piece(s.substr(i, end - i));
    i = end;
  }
}

}  // namespace byte_bpe

// An added or special token, split out of the text before pre-tokenization (Hugging Face's AddedToken).
struct bpe_added_token {
  std::string content;
  std::int64_t id = -1;         // -1: the id vocab.json gives `content`
  bool special = true;          // dropped by decode(ids, true)
  bool lstrip = false;          // eats the white space before it in the text
  bool rstrip = false;          // eats the white space after it
};

struct byte_bpe_options {
  std::vector<bpe_added_token> added_tokens;
  std::string bos_token, eos_token, unk_token, pad_token;  // "" = none; split out of the text as specials
  bool add_bos_token = false;                               // encode() puts BOS first (OPT)
  bool add_prefix_space = false;                            // encode() reads " " + text
  bool clean_up_tokenization_spaces = false;                // decode()'s clean-up (see the header comment)
};

class byte_bpe_tokenizer {
 public:
  static constexpr std::size_t cache_limit = 1 << 16;

  static byte_bpe_tokenizer from_files(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt,
                                       const byte_bpe_options& options = {}) {
    const auto vocab = read_file(vocab_json);  // first: the order of arguments' evaluation is unspecified
    return from_strings(vocab, read_file(merges_txt), options, vocab_json.string(), merges_txt.string());
  }
  // The two files' contents; the names appear in error messages.
  static byte_bpe_tokenizer from_strings(std::string_view vocab_json, std::string_view merges_txt,
                                         const byte_bpe_options& options = {}, std::string vocab_name = "vocab.json",
                                         std::string merges_name = "merges.txt") {
    byte_bpe_tokenizer t;
    auto core = std::make_shared<tables>();
    core->load_vocab(vocab_json, "vocab '" + vocab_name + "'");
    core->load_merges(merges_txt, "merges '" + merges_name + "'");
    t.core_ = std::move(core);
    return t.with_options(options);
  }

  // The same vocabulary and merges with other options (cheap: the tables are shared).
  byte_bpe_tokenizer with_options(const byte_bpe_options& options) const {
    byte_bpe_tokenizer t;
    t.core_ = core_;
    t.opt_ = options;
    t.cache_ = std::make_shared<cache>();
    t.resolve_specials();
    return t;
  }

  // Ids of `text` (see the header comment); with add_special_tokens, BOS first when options.add_bos_token.
  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const {
    std::vector<std::int64_t> ids;
    if (add_special_tokens && opt_.add_bos_token) ids.push_back(*bos_id_);
    run(text, [&](std::int64_t id) { ids.push_back(id); });
    return ids;
  }
  // The token strings encode() would give (byte symbols, as Hugging Face's tokenize()), no BOS.
  std::vector<std::string> tokenize(std::string_view text) const {
    std::vector<std::string> out;
    run(text, [&](std::int64_t id) { out.push_back(id_to_token(id)); });
    return out;
  }

  // Text of `ids` (see the header comment); an id outside the vocabulary is a value_error.
  std::string decode(std::span<const std::int64_t> ids, bool skip_special_tokens = false) const {
    std::string bytes;
    for (const auto id : ids) {
      const auto& e = entry_of(id);
      if (skip_special_tokens && special_.count(id)) continue;
      bytes += e.bytes;
    }
    std::string text;
    for (char32_t c : utf8_decode_lossy(bytes)) utf8_append(text, c);
    if (opt_.clean_up_tokenization_spaces) clean_up(text);
    return text;
  }
  std::string decode(std::initializer_list<std::int64_t> ids, bool skip_special_tokens = false) const {
    return decode(std::span<const std::int64_t>(ids.begin(), ids.size()), skip_special_tokens);
  }

  // The id of the single token `text` encodes to (no BOS), e.g. "\n" or "</s>"; value_error when it
  // encodes to none or to several.
  std::int64_t token_id(std::string_view text) const {
    const auto ids = encode(text, false);
    BLIP2_CHECK(ids.size() == 1, value_error, "byte_bpe_tokenizer::token_id: \"", text, "\" encodes to ", ids.size(),
                " tokens, not one");
    return ids[0];
  }
  // The id of a vocabulary entry or added token written as such (e.g. "\xC4\x8A" for "\n"), if any.
  std::optional<std::int64_t> find(std::string_view token) const {
    for (const auto& a : added_)
      if (a.content == token) return a.id;
    if (const auto it = core_->ids.find(token); it != core_->ids.end()) return it->second;
    return std::nullopt;
  }
  // The vocabulary entry (or added token) of an id; value_error for an id that has none.
  const std::string& id_to_token(std::int64_t id) const { return entry_of(id).token; }

  // One past the largest id (vocabulary and added tokens): the rows an embedding needs; Hugging Face's
  // len(tokenizer) when the ids have no gaps.
  std::size_t size() const { return size_; }
  std::optional<std::int64_t> bos_id() const { return bos_id_; }
  std::optional<std::int64_t> eos_id() const { return eos_id_; }
  std::optional<std::int64_t> unk_id() const { return unk_id_; }
  std::optional<std::int64_t> pad_id() const { return pad_id_; }
  bool is_special(std::int64_t id) const { return special_.count(id) != 0; }
  const byte_bpe_options& options() const { return opt_; }

 private:
  byte_bpe_tokenizer() = default;  // made only by from_files / from_strings / with_options

  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  struct entry {
    std::string token;  // as in vocab.json
    std::string bytes;  // what decode writes for it
  };
  struct merge {
    std::uint32_t rank;
    std::int32_t merged;
  };
  // vocab.json and merges.txt, shared by the copies.
  struct tables {
    std::unordered_map<std::string, std::int64_t, string_hash, std::equal_to<>> ids;
    std::unordered_map<std::int64_t, entry> entries;
    std::unordered_map<std::uint64_t, merge> merges;  // key (left id << 32) | right id
    std::array<std::int32_t, 256> byte_ids{};
    std::int64_t max_id = -1;

    void load_vocab(std::string_view text, const std::string& where) {
      const auto doc = json::parse(text, where);
      BLIP2_CHECK(doc.type == json::value::kind::object, format_error, where, ": line ", doc.line,
                  ": expected a JSON object token -> id, found ", json::value::kind_name(doc.type));
      std::unordered_map<std::int64_t, std::size_t> line_of_id;
      for (const auto& [token, v] : doc.members) {
        const auto id = v.integer();
        BLIP2_CHECK(id && *id >= 0 && *id < (std::int64_t{1} << 31), format_error, where, ": line ", v.line,
                    ": the id of \"", token, "\" must be an integer in [0, 2^31), not ",
                    v.type == json::value::kind::number ? v.text : json::value::kind_name(v.type));
        const auto [it, fresh] = line_of_id.emplace(*id, v.line);
        BLIP2_CHECK(fresh, format_error, where, ": line ", v.line, ": id ", *id, " of \"", token,
                    "\" is already the id of \"", entries[*id].token, "\" (line ", it->second, ")");
        BLIP2_CHECK(ids.emplace(token, *id).second, format_error, where, ": line ", v.line, ": the token \"", token,
                    "\" appears twice");
        entries[*id] = {token, symbols_to_bytes(token)};
        max_id = std::max(max_id, *id);
      }
      for (int b = 0; b < 256; ++b) {
        std::string sym;
        utf8_append(sym, byte_bpe::byte_to_symbol[b]);
        const auto it = ids.find(sym);
        BLIP2_CHECK(it != ids.end(), format_error, where, ": the symbol \"", sym, "\" of byte 0x", std::hex, b,
                    " is missing; a byte-level BPE vocabulary has all 256 byte symbols");
        byte_ids[b] = static_cast<std::int32_t>(it->second);
      }
    }

    void load_merges(std::string_view text, const std::string& where) {
      std::size_t line_no = 0, rank = 0;
      auto id_of = [&](const std::string& sym, const char* what) {
        const auto it = ids.find(sym);
        BLIP2_CHECK(it != ids.end(), format_error, where, ": line ", line_no, ": ", what, " \"", sym,
                    "\" is not in the vocabulary");
        return static_cast<std::int32_t>(it->second);
      };
      for (std::size_t pos = 0; pos < text.size();) {
        std::size_t eol = text.find('\n', pos);
        if (eol == std::string_view::npos) eol = text.size();
        const std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        ++line_no;
        if (line_no == 1 && line.starts_with("#version")) continue;
        std::vector<std::string> parts;  // str.split(): runs of ASCII white space separate
        for (std::size_t i = 0; i < line.size();) {
          while (i < line.size() && std::strchr(" \t\r\v\f", line[i]) && line[i]) ++i;
          std::size_t j = i;
          while (j < line.size() && !(std::strchr(" \t\r\v\f", line[j]) && line[j])) ++j;
          if (j > i) parts.emplace_back(line.substr(i, j - i));
          i = j;
        }
        if (parts.empty()) continue;
        BLIP2_CHECK(parts.size() == 2, format_error, where, ": line ", line_no, ": expected two symbols \"A B\", found ",
                    parts.size());
        const auto a = id_of(parts[0], "the symbol"), b = id_of(parts[1], "the symbol");
        const auto ab = id_of(parts[0] + parts[1], "the merged symbol");
        merges[key(a, b)] = {static_cast<std::uint32_t>(rank++), ab};
      }
    }
  };
  struct cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, string_hash, std::equal_to<>> words;
  };

  std::shared_ptr<const tables> core_;
  std::shared_ptr<cache> cache_;
  byte_bpe_options opt_;
  std::vector<bpe_added_token> added_;  // with ids, longest first
  std::unordered_map<std::int64_t, entry> added_entries_;  // added tokens beyond vocab.json
  std::unordered_map<std::int64_t, bool> special_;
  std::array<bool, 256> added_first_byte_{};
  std::optional<std::int64_t> bos_id_, eos_id_, unk_id_, pad_id_;
  std::size_t size_ = 0;

  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  static std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) blip2::detail::raise<format_error>("'", path.string(), "': cannot open: ", std::strerror(errno));
    std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) blip2::detail::raise<format_error>("'", path.string(), "': read failed");
    return bytes;
  }

  // The bytes a token stands for: its symbols mapped back, or its own UTF-8 when one is no symbol.
  static std::string symbols_to_bytes(std::string_view token) {
    std::string out;
    for (char32_t c : utf8_decode_lossy(token)) {
      if (c >= byte_bpe::symbol_to_byte.size() || byte_bpe::symbol_to_byte[c] < 0) return std::string(token);
      out.push_back(static_cast<char>(byte_bpe::symbol_to_byte[c]));
    }
    return out;
  }

  const entry& entry_of(std::int64_t id) const {
    if (const auto it = added_entries_.find(id); it != added_entries_.end()) return it->second;
    const auto it = core_->entries.find(id);
    BLIP2_CHECK(it != core_->entries.end(), value_error, "byte_bpe_tokenizer: id ", id,
                " is no token of the vocabulary (", size_, " ids)");
    return it->second;
  }

  // Gives every added token its id, adds the bos/eos/unk/pad names as specials, checks the names.
  void resolve_specials() {
    size_ = static_cast<std::size_t>(core_->max_id + 1);
    auto add = [&](bpe_added_token a, const char* what) {
      BLIP2_CHECK(!a.content.empty(), value_error, "byte_bpe_tokenizer: ", what, " has empty content");
      const auto known = core_->ids.find(std::string_view(a.content));
      if (a.id < 0) {
        for (const auto& b : added_)
          if (b.content == a.content) a.id = b.id;
        if (a.id < 0 && known != core_->ids.end()) a.id = known->second;
        BLIP2_CHECK(a.id >= 0, value_error, "byte_bpe_tokenizer: ", what, " \"", a.content,
                    "\" is neither in the vocabulary nor an added token with an id");
      }
      const auto in_vocab = core_->entries.find(a.id);
      BLIP2_CHECK(in_vocab == core_->entries.end() || in_vocab->second.token == a.content, value_error,
                  "byte_bpe_tokenizer: ", what, " \"", a.content, "\" has id ", a.id, ", the id of \"",
                  in_vocab == core_->entries.end() ? "" : in_vocab->second.token, "\" in the vocabulary");
      BLIP2_CHECK(known == core_->ids.end() || known->second == a.id, value_error, "byte_bpe_tokenizer: ", what, " \"",
                  a.content, "\" has id ", a.id, " but the vocabulary gives it ", known->second);
      for (auto& b : added_) {
        if (b.content != a.content) continue;
        BLIP2_CHECK(b.id == a.id, value_error, "byte_bpe_tokenizer: \"", a.content, "\" is given ids ", b.id, " and ", a.id);
        b.special = b.special || a.special;
        return b.id;
      }
      for (const auto& b : added_)
        BLIP2_CHECK(b.id != a.id, value_error, "byte_bpe_tokenizer: id ", a.id, " is given to \"", b.content,
                    "\" and \"", a.content, "\"");
      if (in_vocab == core_->entries.end()) added_entries_[a.id] = {a.content, symbols_to_bytes(a.content)};
      size_ = std::max(size_, static_cast<std::size_t>(a.id + 1));
      added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
      added_.push_back(a);
      return a.id;
    };
    for (const auto& a : opt_.added_tokens) add(a, "the added token");
    auto named = [&](const std::string& name, const char* what) -> std::optional<std::int64_t> {
      if (name.empty()) return std::nullopt;
      bpe_added_token a;
      a.content = name;
      return add(a, what);
    };
    bos_id_ = named(opt_.bos_token, "bos_token");
    eos_id_ = named(opt_.eos_token, "eos_token");
    unk_id_ = named(opt_.unk_token, "unk_token");
    pad_id_ = named(opt_.pad_token, "pad_token");
    BLIP2_CHECK(!opt_.add_bos_token || bos_id_, value_error, "byte_bpe_tokenizer: add_bos_token needs a bos_token");
    for (const auto& a : added_)
      if (a.special) special_[a.id] = true;
    std::stable_sort(added_.begin(), added_.end(),
                     [](const bpe_added_token& x, const bpe_added_token& y) { return x.content.size() > y.content.size(); });
  }

  // The BPE of one pre-token's symbols (in place): rounds of "merge every occurrence of the lowest-ranked
  // pair, left to right", run on a linked list with a heap of (rank, position) so a long word is not
  // quadratic. Every pair on the heap is checked against the list when popped (stale entries skipped).
  void bpe(std::vector<std::int32_t>& word) const {
    const std::size_t n = word.size();
    if (n < 2) return;
    struct candidate {
      std::uint32_t rank, pos;
      std::int32_t left, right, merged;
      bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<candidate, std::vector<candidate>, std::greater<>> heap;
    std::vector<std::uint32_t> next(n), prev(n);
    std::vector<char> alive(n, 1);
    constexpr std::uint32_t none = ~0u;
    for (std::size_t i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? static_cast<std::uint32_t>(i + 1) : none;
      prev[i] = i > 0 ? static_cast<std::uint32_t>(i - 1) : none;
    }
    auto push = [&](std::uint32_t i) {  // the pair starting at position i, if it has a rank
      if (i == none || next[i] == none) return;
      const auto it = core_->merges.find(key(word[i], word[next[i]]));
      if (it != core_->merges.end()) heap.push({it->second.rank, i, word[i], word[next[i]], it->second.merged});
    };
    for (std::uint32_t i = 0; i + 1 < n; ++i) push(i);
    std::vector<candidate> round;
    std::vector<std::uint32_t> touched;
    while (!heap.empty()) {
      round.clear();
      const std::uint32_t rank = heap.top().rank;
      while (!heap.empty() && heap.top().rank == rank) {  // in position order
        round.push_back(heap.top());
        heap.pop();
      }
      touched.clear();
      for (const auto& c : round) {
        if (!alive[c.pos] || word[c.pos] != c.left || next[c.pos] == none || word[next[c.pos]] != c.right) continue;
        const std::uint32_t j = next[c.pos];
        word[c.pos] = c.merged;
        alive[j] = 0;
        next[c.pos] = next[j];
        if (next[j] != none) prev[next[j]] = c.pos;
        touched.push_back(c.pos);
      }
      // the pairs the round made (the merged pair itself cannot recur: a merged symbol is longer than its parts)
      for (const auto p : touched) {
        push(prev[p]);
        push(p);
      }
    }
    std::size_t k = 0;
    for (std::uint32_t i = 0; i != none; i = next[i]) word[k++] = word[i];
    word.resize(k);
  }

  // Calls sink(id) for each token of one pre-token.
  template <class Sink>
  void encode_piece(std::string_view piece, Sink& sink) const {
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      if (const auto it = cache_->words.find(piece); it != cache_->words.end()) {
        for (const auto id : it->second) sink(id);
        return;
      }
    }
    std::vector<std::int32_t> word(piece.size());
    for (std::size_t i = 0; i < piece.size(); ++i) word[i] = core_->byte_ids[static_cast<unsigned char>(piece[i])];
    bpe(word);
    for (const auto id : word) sink(id);
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->words.size() >= cache_limit) cache_->words.clear();
    cache_->words.emplace(std::string(piece), std::move(word));
  }

  // The longest added token at text[i..], or nullptr.
  const bpe_added_token* added_at(std::string_view text, std::size_t i) const {
    if (!added_first_byte_[static_cast<unsigned char>(text[i])]) return nullptr;
    for (const auto& a : added_)  // longest first
      if (text.substr(i, a.content.size()) == a.content) return &a;
    return nullptr;
  }

  // Calls sink(id) for every token of `utf8` (steps 0 to 3 of the header comment).
  template <class Sink>
  void run(std::string_view utf8, Sink&& sink) const {
    std::string text = opt_.add_prefix_space ? " " : "";
    if (is_valid_utf8(utf8)) {
      text.append(utf8);
    } else {
      for (char32_t c : utf8_decode_lossy(utf8)) utf8_append(text, c);
    }
    auto strip = [&](std::size_t b, std::size_t e, bool left, bool right) {  // [b, e) less white space
      if (left)
        while (b < e && byte_bpe::py_space(utf8_decode_step(text, b).code_point)) b += utf8_decode_step(text, b).length;
      if (right)
        while (e > b) {
          std::size_t s = e - 1;
          while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
          if (!byte_bpe::py_space(utf8_decode_step(text, s).code_point)) break;
          e = s;
        }
      return std::pair{b, e};
    };
    auto piece_sink = [&](std::string_view piece) { encode_piece(piece, sink); };
    std::size_t chunk = 0;
    bool eat_left = false;  // the previous added token has rstrip
    for (std::size_t i = 0; i < text.size();) {
      const auto* a = added_.empty() ? nullptr : added_at(text, i);
      if (!a) {
        ++i;
        continue;
      }
      const auto [b, e] = strip(chunk, i, eat_left, a->lstrip);
      byte_bpe::pretokenize(std::string_view(text).substr(b, e - b), piece_sink);
      sink(a->id);
      i += a->content.size();
      chunk = i;
      eat_left = a->rstrip;
    }
    const auto [b, e] = strip(chunk, text.size(), eat_left, false);
    byte_bpe::pretokenize(std::string_view(text).substr(b, e - b), piece_sink);
  }

  static void clean_up(std::string& s) {  // Hugging Face's clean_up_tokenization, in its order
    static constexpr std::pair<std::string_view, std::string_view> rules[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : rules) {
      std::string out;
      for (std::size_t i = 0; i < s.size();) {
        if (s.compare(i, from.size(), from) == 0) {
          out += to;
          i += from.size();
        } else {
          out.push_back(s[i++]);
        }
      }
      s = std::move(out);
    }
  }
};

}  // namespace blip2::io
