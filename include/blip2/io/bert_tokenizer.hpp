// blip2/io/bert_tokenizer.hpp: the BERT uncased WordPiece tokenizer, as Hugging Face's BertTokenizer
// (do_lower_case=True, tokenize_chinese_chars=True, strip_accents following lower-case) behaves, plus
// LAVIS's caption pre-processing. Needs only C++20 (no nlohmann_json).
//
//   auto tok = blip2::io::bert_tokenizer::from_vocab_file("bert-base-uncased/vocab.txt");
//   tok.tokenize("A naïve café!")                  // {"a", "naive", "cafe", "!"} with that vocabulary
//   tok.encode(blip2::io::lavis_caption("Two DOGS, playing."), 32)   // [CLS] two dogs , playing [SEP]
//   auto batch = tok.encode_batch(captions, 32);   // padded to the longest, attention mask 1/0
//
// The steps, in Hugging Face's order (transformers' tokenization_bert.py and tokenization_utils.py):
//   0. The special tokens [UNK] [SEP] [PAD] [CLS] [MASK] and LAVIS's [DEC], written exactly (case-sensitive)
//      in the text, are kept whole: the text is split around them (PreTrainedTokenizer.tokenize).
//   1. Clean: U+0000, U+FFFD and every "control" code point (category C*: Cc, Cf, Cn, Co; not \t \n \r)
//      are dropped; whitespace (' ', \t, \n, \r, category Zs; also the other str.isspace() code points that
//      survive cleaning, U+2028 and U+2029, on which Python's str.split() splits) separates words.
//   2. CJK ideographs (the blocks of BasicTokenizer._is_chinese_char) become words of their own.
//   3. Each word is lower-cased code point by code point (str.lower() of one code point, so U+0130 becomes
//      "i" + U+0307 and there is no Final_Sigma: Hugging Face lower-cases the text one character at a time
//      before the basic tokenizer), decomposed (NFD: full canonical decomposition, Hangul arithmetic,
//      canonical ordering), and stripped of category Mn.
//   4. Punctuation (ASCII 33-47, 58-64, 91-96, 123-126, category P*) becomes words of its own.
//   5. WordPiece: a word over 100 code points is [UNK]; otherwise greedy longest-match-first pieces, all
//      but the first prefixed "##"; a word with a position no piece matches is [UNK] as a whole.
// The Unicode facts come from blip2/io/unicode_tables.hpp, generated from Python's unicodedata (the one the
// reference used); tests/test_bert_tokenizer.cpp checks every code point against the generator's checksum.
//
// Choices (each also tested):
//   - Invalid UTF-8 is not an error: each maximal invalid subpart becomes U+FFFD, as Python's
//     bytes.decode("utf-8", errors="replace") does, and the cleaner then drops it like any U+FFFD (so
//     "ab\xFFcd" is the one word "abcd", as Hugging Face gives for the text Python decoded). Nothing is
//     read past the input; no input makes tokenize throw.
//   - The vocabulary file: one token a line, UTF-8 (invalid UTF-8 is a format_error naming the file and
//     byte offset, as Python's strict decoding would fail); line ends \n, \r\n or \r (Python's universal
//     newlines); a token's id is its line number from 0. A token on several lines gets the id of the LAST
//     one (Hugging Face's load_vocab assigns into a dict, later lines overwrite). vocab_size() is the
//     number of lines (the rows of the embedding matrix ids index), not the number of distinct tokens.
//   - [UNK], [CLS], [SEP] and [PAD] must be in the vocabulary (format_error naming the file and the missing
//     token; value_error for from_vocab). [MASK] is optional (written in the text, it maps to [UNK]'s id
//     when absent, as Hugging Face's convert_tokens_to_ids does).
//   - [DEC] (LAVIS's bos token, added after the vocabulary): dec_id() is its id when the vocabulary has it,
//     else vocab_size(), the id Hugging Face's add_special_tokens gives a vocabulary without duplicates.
//   - encode truncates to max_length ids including [CLS] and [SEP] (Hugging Face's truncation=True);
//     max_length < 2 is a value_error.
// A bert_tokenizer is immutable after construction: its const members may be called from several threads.
#pragma once
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/io/unicode_tables.hpp"
#include "blip2/io/utf8.hpp"

namespace blip2::io {

// ---- Unicode lookups over the generated tables ----
namespace unicode {

inline constexpr char32_t max_code_point = 0x10FFFF;

constexpr std::uint8_t flags_from_table(char32_t cp) {
  const std::uint32_t key = (static_cast<std::uint32_t>(cp) << 8) | 0xFFu;
  const auto* it = std::upper_bound(std::begin(flag_ranges), std::end(flag_ranges), key);
  return static_cast<std::uint8_t>(*(it - 1) & 0xFFu);  // flag_ranges[0] starts at U+0000
}

// The flags of ASCII, looked up once at compile time (most captions are ASCII).
inline constexpr auto ascii_flags = [] {
  std::array<std::uint8_t, 128> a{};
  for (char32_t c = 0; c < 128; ++c) a[c] = flags_from_table(c);
  return a;
}();

// The flag bits (flag_control, flag_hf_space, ...) of cp; beyond U+10FFFF: control (dropped).
constexpr std::uint8_t flags(char32_t cp) {
  if (cp < 128) return ascii_flags[cp];
  if (cp > max_code_point) return flag_control;
  return flags_from_table(cp);
}

// Canonical combining class of cp (0 for starters).
inline std::uint8_t combining_class(char32_t cp) {
  if (cp > max_code_point) return 0;
  const std::uint32_t key = (static_cast<std::uint32_t>(cp) << 8) | 0xFFu;
  const auto* it = std::upper_bound(std::begin(ccc_ranges), std::end(ccc_ranges), key);
  return static_cast<std::uint8_t>(*(it - 1) & 0xFFu);
}

// Appends str.lower() of the single code point cp (one or several code points; no Final_Sigma).
inline void append_lower(std::u32string& out, char32_t cp) {
  if (cp < 128) {  // ASCII: A-Z only
    out.push_back(cp >= U'A' && cp <= U'Z' ? cp + 32 : cp);
    return;
  }
  for (const auto& m : lower_multi) {
    if (m.cp == cp) {
      out.append(m.out, m.length);
      return;
    }
  }
  const auto* it = std::upper_bound(std::begin(lower_runs), std::end(lower_runs), cp,
                                    [](char32_t c, const lower_run& r) { return c < r.first; });
  if (it != std::begin(lower_runs)) {
    const auto& r = *(it - 1);
    const char32_t k = cp - r.first;
    if (k % r.stride == 0 && k / r.stride < r.count) {
      out.push_back(static_cast<char32_t>(static_cast<std::int64_t>(cp) + r.delta));
      return;
    }
  }
  out.push_back(cp);
}

// Appends the full canonical decomposition of cp (not yet canonically ordered across code points). Covers
// every code point that is its own lower-case (the tokenizer lower-cases first), Hangul syllables included.
inline void append_nfd(std::u32string& out, char32_t cp) {
  constexpr char32_t s_base = 0xAC00, l_base = 0x1100, v_base = 0x1161, t_base = 0x11A7;
  constexpr char32_t t_count = 28, n_count = 21 * 28, s_count = 19 * 21 * 28;
  if (cp >= s_base && cp < s_base + s_count) {  // Hangul syllable: L V (T), Unicode chapter 3.12
    const char32_t s = cp - s_base;
    out.push_back(l_base + s / n_count);
    out.push_back(v_base + (s % n_count) / t_count);
    if (s % t_count != 0) out.push_back(t_base + s % t_count);
    return;
  }
  const auto* it = std::lower_bound(std::begin(nfd_entries), std::end(nfd_entries), cp,
                                    [](const nfd_entry& e, char32_t c) { return e.cp < c; });
  if (it != std::end(nfd_entries) && it->cp == cp) {
    out.append(nfd_pool + it->offset, it->length);
  } else {
    out.push_back(cp);
  }
}

// Canonical ordering of s[from..]: each run of non-starters is stably sorted by combining class.
inline void canonical_order(std::u32string& s, std::size_t from = 0) {
  for (std::size_t i = from; i < s.size();) {
    if (combining_class(s[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && combining_class(s[j]) != 0) ++j;
    std::stable_sort(s.begin() + static_cast<std::ptrdiff_t>(i), s.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
}

// BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks and their extensions and
// compatibility blocks, exactly Hugging Face's list (not Hiragana, Katakana or Hangul).
constexpr bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

inline bool is_space_for_split(char32_t cp) {  // _is_whitespace, or what str.split() splits on
  return (flags(cp) & (flag_hf_space | flag_py_space)) != 0;
}

// str.lower() of a whole string, Final_Sigma included (CPython's handle_capital_sigma): U+03A3 becomes
// U+03C2 when a cased letter precedes it and none follows it, case-ignorable code points skipped.
inline std::u32string lower_string(std::u32string_view s) {
  auto ignorable = [](char32_t c) { return (flags(c) & flag_case_ignorable) != 0; };
  auto cased = [](char32_t c) { return (flags(c) & flag_cased) != 0; };
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != 0x3A3) {
      append_lower(out, s[i]);
      continue;
    }
    std::size_t j = i;
    while (j > 0 && ignorable(s[j - 1])) --j;
    bool final_sigma = j > 0 && cased(s[j - 1]);
    if (final_sigma) {
      std::size_t k = i + 1;
      while (k < s.size() && ignorable(s[k])) ++k;
      final_sigma = k == s.size() || !cased(s[k]);
    }
    out.push_back(final_sigma ? char32_t{0x3C2} : char32_t{0x3C3});
  }
  return out;
}

}  // namespace unicode

// ---- batches ----

// Token ids of a batch, padded with [PAD] to the longest row. (B, T) row-major.
struct tokenized_batch {
  std::size_t batch = 0, length = 0;
  std::vector<std::int64_t> input_ids;       // (B, T)
  std::vector<std::int64_t> attention_mask;  // (B, T): 1 for a token, 0 for padding
};

// ---- steps 1 to 4: BertTokenizer's BasicTokenizer ----

// Calls on_word(const std::u32string&) for each word of `text` (steps 1-4 of the header comment: clean,
// CJK, lower-case + NFD + drop Mn, punctuation), until it returns false. No special-token handling.
template <class OnWord>
void for_each_basic_word(std::u32string_view text, OnWord&& on_word) {
  bool go = true;
  std::u32string word;                        // the current whitespace-separated word, as written
  std::u32string lowered, decomposed, piece;  // scratch
  auto emit = [&](const std::u32string& w) {
    if (go && !w.empty()) go = on_word(w);
  };
  // 3 + 4. Lower-case, NFD, drop Mn, then split off punctuation.
  auto normalise = [&](const std::u32string& w) {
    lowered.clear();
    for (char32_t c : w) unicode::append_lower(lowered, c);
    decomposed.clear();
    for (char32_t c : lowered) unicode::append_nfd(decomposed, c);
    unicode::canonical_order(decomposed);
    piece.clear();
    for (char32_t c : decomposed) {
      const auto f = unicode::flags(c);
      if (f & unicode::flag_mn) continue;
      if (f & unicode::flag_punct) {
        emit(piece);
        piece.assign(1, c);
        emit(piece);
        piece.clear();
      } else if (f & (unicode::flag_hf_space | unicode::flag_py_space)) {
        // cannot happen after cleaning (no canonical decomposition yields a space); mirrors the final
        // str.split() of BasicTokenizer.tokenize
        emit(piece);
        piece.clear();
      } else {
        piece.push_back(c);
      }
    }
    emit(piece);
  };
  auto flush = [&] {
    if (!word.empty()) normalise(word);
    word.clear();
  };
  for (std::size_t i = 0; i < text.size() && go; ++i) {
    const char32_t c = text[i];
    const auto f = unicode::flags(c);
    if (f & unicode::flag_control) continue;  // 1. clean (U+0000 and U+FFFD carry this flag too)
    if (f & (unicode::flag_hf_space | unicode::flag_py_space)) {
      flush();
    } else if (unicode::is_cjk(c)) {  // 2. an ideograph is a word of its own
      flush();
      word.push_back(c);
      flush();
    } else {
      word.push_back(c);
    }
  }
  flush();
}

// The words of BasicTokenizer(do_lower_case=True).tokenize(text); UTF-8 in (invalid sequences replaced and
// dropped, as in bert_tokenizer) and out.
inline std::vector<std::string> bert_basic_tokenize(std::string_view utf8) {
  std::vector<std::string> out;
  for_each_basic_word(utf8_decode_lossy(utf8), [&](const std::u32string& w) {
    std::string& s = out.emplace_back();
    for (char32_t c : w) utf8_append(s, c);
    return true;
  });
  return out;
}

// ---- the tokenizer ----

class bert_tokenizer {
 public:
  // BertTokenizer's max_input_chars_per_word: a longer word (in code points, after normalisation) is [UNK].
  static constexpr std::size_t max_input_chars_per_word = 100;

  // Reads a vocab.txt (see the header comment for the format and its errors).
  static bert_tokenizer from_vocab_file(const std::filesystem::path& path) {
    const std::string where = "vocab '" + path.string() + "'";
    std::ifstream in(path, std::ios::binary);
    if (!in) blip2::detail::raise<format_error>(where, ": cannot open: ", std::strerror(errno));
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) blip2::detail::raise<format_error>(where, ": read failed");
    if (const auto bad = utf8_invalid_offset(bytes); bad != std::string_view::npos) {
      const auto line = 1 + std::count(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
      blip2::detail::raise<format_error>(where, ": invalid UTF-8 at byte offset ", bad, " (line ", line,
                                  "); a vocabulary is UTF-8 text, one token a line");
    }
    // Python's universal newlines: \r\n, \r and \n all end a line; a last line without an end counts.
    std::vector<std::string> tokens;
    std::string line;
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      const char c = bytes[i];
      if (c == '\n' || c == '\r') {
        tokens.push_back(std::move(line));
        line.clear();
        if (c == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n') ++i;
      } else {
        line.push_back(c);
      }
    }
    if (!line.empty()) tokens.push_back(std::move(line));
    return make(std::move(tokens), where, true);
  }

  // A vocabulary given as its lines (token of id k at tokens[k]); `name` appears in error messages.
  static bert_tokenizer from_vocab(std::vector<std::string> tokens, std::string name) {
    return make(std::move(tokens), "vocab '" + name + "'", false);
  }

  // Word pieces of `utf8` (special tokens written in the text kept whole).
  std::vector<std::string> tokenize(std::string_view utf8) const {
    std::vector<std::string> out;
    run(utf8, [&](std::string_view token, std::int64_t) {
      out.emplace_back(token);
      return true;
    });
    return out;
  }

  // [CLS] ids [SEP], truncated to max_length ids (the two specials included), not padded.
  std::vector<std::int64_t> encode(std::string_view utf8, std::size_t max_length = 512) const {
    BLIP2_CHECK(max_length >= 2, value_error, "bert_tokenizer::encode: max_length = ", max_length,
                " must be at least 2 (room for [CLS] and [SEP])");
    std::vector<std::int64_t> ids{cls_id_};
    run(utf8, [&](std::string_view, std::int64_t id) {
      if (ids.size() + 1 >= max_length) return false;  // the rest would be truncated: stop early
      ids.push_back(id);
      return true;
    });
    ids.push_back(sep_id_);
    return ids;
  }

  // encode() of each text, padded with [PAD] to the longest (<= max_length); attention_mask 1 on tokens.
  tokenized_batch encode_batch(std::span<const std::string> texts, std::size_t max_length) const {
    BLIP2_CHECK(max_length >= 2, value_error, "bert_tokenizer::encode_batch: max_length = ", max_length,
                " must be at least 2 (room for [CLS] and [SEP])");
    std::vector<std::vector<std::int64_t>> rows;
    rows.reserve(texts.size());
    tokenized_batch b;
    b.batch = texts.size();
    for (const auto& t : texts) {
      rows.push_back(encode(t, max_length));
      b.length = std::max(b.length, rows.back().size());
    }
    b.input_ids.assign(b.batch * b.length, pad_id_);  // (B, T)
    b.attention_mask.assign(b.batch * b.length, 0);   // (B, T)
    for (std::size_t r = 0; r < b.batch; ++r) {
      std::copy(rows[r].begin(), rows[r].end(), b.input_ids.begin() + static_cast<std::ptrdiff_t>(r * b.length));
      std::fill_n(b.attention_mask.begin() + static_cast<std::ptrdiff_t>(r * b.length), rows[r].size(), 1);
    }
    return b;
  }

  // The id of a token: its vocabulary id, dec_id() for "[DEC]", else [UNK]'s id (convert_tokens_to_ids).
  std::int64_t token_id(std::string_view token) const {
    if (const auto it = ids_.find(token); it != ids_.end()) return it->second;
    if (token == "[DEC]") return dec_id_;
    return unk_id_;
  }

  // The token of an id in [0, vocab_size()], "[DEC]" for dec_id(); value_error otherwise.
  const std::string& id_to_token(std::int64_t id) const {
    static const std::string dec = "[DEC]";
    if (id == dec_id_ && dec_id_ == static_cast<std::int64_t>(tokens_.size())) return dec;
    BLIP2_CHECK(id >= 0 && id < static_cast<std::int64_t>(tokens_.size()), value_error, name_, ": id ", id,
                " is outside the vocabulary [0, ", tokens_.size(), ")");
    return tokens_[static_cast<std::size_t>(id)];
  }

  std::int64_t dec_id() const { return dec_id_; }
  std::int64_t unk_id() const { return unk_id_; }
  std::int64_t cls_id() const { return cls_id_; }
  std::int64_t sep_id() const { return sep_id_; }
  std::int64_t pad_id() const { return pad_id_; }
  // Lines of the vocabulary (ids are in [0, vocab_size()), plus dec_id() == vocab_size() when appended).
  std::size_t vocab_size() const { return tokens_.size(); }

 private:
  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  using vocab_map = std::unordered_map<std::string, std::int64_t, string_hash, std::equal_to<>>;

  std::vector<std::string> tokens_;  // id -> token (line order)
  vocab_map ids_;                    // token -> id (the last line wins)
  std::string name_;
  std::size_t longest_token_ = 0;  // bytes of the longest vocabulary entry
  std::int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, pad_id_ = 0, dec_id_ = 0;

  static bert_tokenizer make(std::vector<std::string> tokens, std::string where, bool from_file) {
    bert_tokenizer t;
    t.name_ = std::move(where);
    t.ids_.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      t.ids_[tokens[i]] = static_cast<std::int64_t>(i);
      t.longest_token_ = std::max(t.longest_token_, tokens[i].size());
    }
    auto required = [&](std::string_view token) {
      const auto it = t.ids_.find(token);
      if (it != t.ids_.end()) return it->second;
      const bool bom = !tokens.empty() && tokens[0].starts_with("\xEF\xBB\xBF");
      const auto msg = blip2::detail::concat(t.name_, ": the special token ", token, " is missing (", tokens.size(),
                                      " lines; a BERT vocabulary needs [PAD], [UNK], [CLS] and [SEP])",
                                      bom ? "; its first line starts with a UTF-8 byte-order mark" : "");
      if (from_file) throw format_error(msg);
      throw value_error(msg);
    };
    t.unk_id_ = required("[UNK]");
    t.cls_id_ = required("[CLS]");
    t.sep_id_ = required("[SEP]");
    t.pad_id_ = required("[PAD]");
    const auto dec = t.ids_.find(std::string_view("[DEC]"));
    t.dec_id_ = dec != t.ids_.end() ? dec->second : static_cast<std::int64_t>(tokens.size());
    t.tokens_ = std::move(tokens);
    return t;
  }

  // Finds a special token written at s[i..]; its length, 0 when none starts there.
  static std::size_t special_at(std::u32string_view s, std::size_t i) {
    static constexpr std::array<std::string_view, 6> specials = {"[UNK]", "[SEP]", "[PAD]",
                                                                 "[CLS]", "[MASK]", "[DEC]"};
    if (s[i] != U'[') return 0;
    for (const auto sp : specials) {
      if (s.size() - i < sp.size()) continue;
      bool same = true;
      for (std::size_t k = 0; k < sp.size() && same; ++k) same = s[i + k] == static_cast<char32_t>(sp[k]);
      if (same) return sp.size();
    }
    return 0;
  }

  // Calls sink(token, id) for each token of `utf8` in order until it returns false.
  template <class Sink>
  void run(std::string_view utf8, Sink&& sink) const {
    const std::u32string text = utf8_decode_lossy(utf8);
    bool go = true;
    std::string utf8_word, key;                     // scratch of wordpiece()
    std::vector<std::size_t> offsets;               // byte offset of each code point of utf8_word
    std::vector<std::pair<std::size_t, std::int64_t>> pieces;  // (end code point, id) of each piece

    // 5. WordPiece of one normalised word.
    auto wordpiece = [&](const std::u32string& w) {
      if (!go || w.empty()) return;
      if (w.size() > max_input_chars_per_word) {
        go = sink(std::string_view("[UNK]"), unk_id_);
        return;
      }
      utf8_word.clear();
      offsets.clear();
      for (char32_t c : w) {
        offsets.push_back(utf8_word.size());
        utf8_append(utf8_word, c);
      }
      offsets.push_back(utf8_word.size());
      pieces.clear();
      std::size_t start = 0;
      const std::size_t n = w.size();
      while (start < n) {
        bool found = false;
        for (std::size_t end = n; end > start; --end) {  // longest match first
          // a candidate longer than every vocabulary entry cannot match: skip the lookup (same result)
          if (offsets[end] - offsets[start] + (start > 0 ? 2 : 0) > longest_token_) continue;
          key.assign(start > 0 ? "##" : "");
          key.append(utf8_word, offsets[start], offsets[end] - offsets[start]);
          if (const auto it = ids_.find(std::string_view(key)); it != ids_.end()) {
            pieces.emplace_back(end, it->second);
            start = end;
            found = true;
            break;
          }
        }
        if (!found) {
          go = sink(std::string_view("[UNK]"), unk_id_);
          return;
        }
      }
      std::size_t begin = 0;
      for (const auto& [end, id] : pieces) {
        key.assign(begin > 0 ? "##" : "");
        key.append(utf8_word, offsets[begin], offsets[end] - offsets[begin]);
        if (go) go = sink(std::string_view(key), id);
        begin = end;
      }
    };

    auto on_word = [&](const std::u32string& w) {
      wordpiece(w);
      return go;
    };
    // 0. special tokens written in the text are kept whole; the text between them is split into words
    std::size_t chunk = 0;
    for (std::size_t i = 0; i < text.size() && go;) {
      const auto len = special_at(text, i);
      if (len == 0) {
        ++i;
        continue;
      }
      for_each_basic_word(std::u32string_view(text).substr(chunk, i - chunk), on_word);
      std::string sp;
      for (std::size_t k = 0; k < len; ++k) sp.push_back(static_cast<char>(text[i + k]));
      if (go) go = sink(std::string_view(sp), token_id(sp));
      i += len;
      chunk = i;
    }
    if (go) for_each_basic_word(std::u32string_view(text).substr(chunk), on_word);
  }
};

// ---- LAVIS's caption pre-processing ----

// BlipCaptionProcessor.pre_caption (lavis/processors/blip_processors.py): str.lower() (Final_Sigma
// included); each of . ! " ( ) * # : ; ~ becomes a space; every run of two or more whitespace code points
// (re's \s, str.isspace()) becomes one space; trailing '\n' removed, then leading and trailing ' '; at most
// max_words words, counting by split(" "). Invalid UTF-8 becomes U+FFFD (see bert_tokenizer), so the result
// is always valid UTF-8.
inline std::string lavis_caption(std::string_view caption, std::size_t max_words = 50) {
  const std::u32string low = unicode::lower_string(utf8_decode_lossy(caption));
  // punctuation to spaces, then runs of >= 2 whitespace code points to one space
  std::u32string s;
  s.reserve(low.size());
  auto space = [](char32_t c) {
    switch (c) {
      case U'.': case U'!': case U'"': case U'(': case U')': case U'*': case U'#': case U':': case U';': case U'~':
        return U' ';
      default:
        return c;
    }
  };
  for (std::size_t i = 0; i < low.size();) {
    std::size_t j = i;
    while (j < low.size() && (unicode::flags(space(low[j])) & unicode::flag_py_space)) ++j;
    if (j - i >= 2) {
      s.push_back(U' ');
      i = j;
    } else {
      s.push_back(space(low[i]));
      ++i;
    }
  }
  // rstrip("\n"), then strip(" ")
  while (!s.empty() && s.back() == U'\n') s.pop_back();
  std::size_t b = 0, e = s.size();
  while (b < e && s[b] == U' ') ++b;
  while (e > b && s[e - 1] == U' ') --e;
  // split(" ") and keep the first max_words words
  std::string out;
  std::size_t words = 1;  // "".split(" ") is [""]: one (empty) word
  for (std::size_t i = b; i < e; ++i) {
    if (s[i] == U' ' && ++words > max_words) break;
    utf8_append(out, s[i]);
  }
  if (max_words == 0) out.clear();
  return out;
}

}  // namespace blip2::io
