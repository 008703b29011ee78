// blip2/io/bpe_trainer.hpp: train GPT-2's byte-level BPE on a corpus of lines and write it as an OPT
// tokenizer (vocab.json, merges.txt, tokenizer_config.json) that load_opt_tokenizer reads back
// (io/opt_tokenizer.hpp). Needs only C++20.
//
//   std::vector<std::string> lines = {"a photo of a red circle", "Question: what colour is it? Short answer: red"};
//   auto bpe = blip2::io::train_byte_bpe(lines, {.vocab_size = 400});
//   bpe.merges                 // {{"Ġ", "a"}, ...}: in the order learned (= rank)
//   bpe.files()                // the three files' texts (save them with io/save_blip2_opt.hpp)
//   bpe.tokenizer().encode("a red circle")    // {2, ...}: the tokenizer those files make
//
// The algorithm (Sennrich et al.'s BPE on GPT-2's byte symbols; the rules of Hugging Face tokenizers'
// BpeTrainer, which ByteLevelBPETokenizer.train runs):
//   1. Each line is read as the tokenizer will read it (byte_bpe_tokenizer.hpp's encode): invalid UTF-8 is
//      replaced (each maximal invalid subpart by U+FFFD), the four special tokens are split out of the text
//      (their characters never join a merge), and the rest is pre-tokenized by GPT-2's pattern
//      (byte_bpe::pretokenize, the tokenizer's own function). Equal pre-tokens are counted once with their
//      frequency; lines are independent (no pre-token spans two lines).
//   2. A pre-token starts as its UTF-8 bytes, one byte symbol each (bytes_to_unicode: ' ' -> "Ġ").
//   3. Repeat: count every adjacent pair of symbols over all pre-tokens, weighted by frequency (overlapping
//      occurrences count: "aaa" holds (a, a) twice); take the pair with the highest count; ties go to the
//      pair whose (left id, right id) is smallest, ids in vocabulary order (the byte symbols in
//      bytes_to_unicode order, then the merged tokens in the order they were made), as BpeTrainer breaks
//      them. Append the merge "A B", give "AB" the next id (or the id it already has when another merge
//      made the same string), and replace every non-overlapping occurrence of A B, left to right, in every
//      pre-token: exactly what encode() will do with that merge's rank.
//   4. Stop when the vocabulary has options.vocab_size entries, or when the best pair occurs fewer than
//      options.min_frequency times (2 by default: no pair occurs twice), or when no pair is left.
// Counts are updated incrementally (the pre-tokens that hold the merged pair are recounted; a heap of
// (count, pair) with stale entries skipped), so a merge costs the pre-tokens it touches, not the corpus.
// Checked merge for merge against tokenizers 0.23.2 (tests/fixtures/make_bpe_train_fixtures.js). One known
// difference: when two different pairs make the same string (e.g. "ab"+"c" and "a"+"bc"), a later pair
// with that token may be found in words of both origins; we merge it everywhere at once, BpeTrainer
// (which tracks positions per heap entry) can merge it in two steps and list the pair twice.
//
// The vocabulary, in OPT's id convention: <s> 0, <pad> 1, </s> 2, <unk> 3, then the 256 byte symbols in
// GPT-2's bytes_to_unicode order ("!" 4 .. "ÿ" 191, then the 68 remapped bytes: "Ā" (0x00) 192 ..
// "Ġ" (' ') 224 .. "Ń" (0xAD) 259), then the merged tokens in the order they were made. (OPT's real ids
// follow fairseq's frequency order instead; any order loads.) merges.txt is "#version: 0.2" then one
// "A B" line per merge; vocab.json is a JSON object in id order, UTF-8 written as is.
// tokenizer_config.json is OPT's: add_bos_token true, bos = eos = unk = "</s>", pad = "<pad>", errors
// "replace", and clean_up_tokenization_spaces false, so that decode is the exact inverse of encode in
// every transformers version (without the field, transformers < 4.45 would turn " ." into ".").
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/io/byte_bpe_tokenizer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/io/utf8.hpp"

namespace blip2::io {

// The texts of a byte-level BPE tokenizer's files, as a checkpoint directory holds them.
struct bpe_tokenizer_files {
  std::string vocab_json;
  std::string merges_txt;
  std::string tokenizer_config_json;  // "" = none (load_opt_tokenizer then takes OPT's defaults)
  std::string added_tokens_json;      // "" = none
};

// The files of a tokenizer directory (vocab.json and merges.txt required; tokenizer_config.json and
// added_tokens.json when present), checked by loading them as load_opt_tokenizer does.
inline bpe_tokenizer_files read_bpe_tokenizer_files(const std::filesystem::path& dir) {
  (void)load_opt_tokenizer(dir);  // format_error naming the file and line when they do not load
  bpe_tokenizer_files f;
  f.vocab_json = detail::read_text_file(dir / "vocab.json");
  f.merges_txt = detail::read_text_file(dir / "merges.txt");
  if (std::filesystem::exists(dir / "tokenizer_config.json"))
    f.tokenizer_config_json = detail::read_text_file(dir / "tokenizer_config.json");
  if (std::filesystem::exists(dir / "added_tokens.json"))
    f.added_tokens_json = detail::read_text_file(dir / "added_tokens.json");
  return f;
}

struct bpe_training_options {
  std::size_t vocab_size = 50265;   // the most entries vocab.json may have (specials and byte symbols included)
  std::int64_t min_frequency = 2;   // a pair occurring fewer times is never merged
};

// OPT's special tokens, ids 0..3, in this order.
inline constexpr std::array<std::string_view, 4> opt_special_tokens = {"<s>", "<pad>", "</s>", "<unk>"};

// A trained vocabulary: tokens by id, merges by rank.
struct trained_byte_bpe {
  std::vector<std::string> tokens;                          // id -> token (vocab.json's keys)
  std::vector<std::pair<std::string, std::string>> merges;  // rank -> "A B"
  std::vector<std::int64_t> merge_counts;                   // rank -> how often the pair occurred when merged

  std::string vocab_json() const;
  std::string merges_txt() const;
  static std::string tokenizer_config_json();
  bpe_tokenizer_files files() const { return {vocab_json(), merges_txt(), tokenizer_config_json(), ""}; }
  // The tokenizer the three files make (what load_opt_tokenizer gives on a directory holding them).
  byte_bpe_tokenizer tokenizer() const {
    return byte_bpe_tokenizer::from_strings(vocab_json(), merges_txt(),
                                            parse_tokenizer_config(tokenizer_config_json(), "tokenizer_config.json"));
  }
};

namespace detail {

// `s` as a JSON string: quotes, backslash and control characters escaped, other UTF-8 as is.
inline std::string json_quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\u00";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Bytes in vocabulary order: by the code point of their symbol, which is bytes_to_unicode's order (the
// printable bytes keep code points < 0x100, the other 68 get 0x100.. in byte order).
inline constexpr std::array<std::uint8_t, 256> bytes_in_symbol_order = [] {
  std::array<std::uint8_t, 256> order{};
  std::size_t k = 0;
  for (std::size_t cp = 0; cp < byte_bpe::symbol_to_byte.size(); ++cp)
    if (byte_bpe::symbol_to_byte[cp] >= 0) order[k++] = static_cast<std::uint8_t>(byte_bpe::symbol_to_byte[cp]);
  return order;
}();

inline std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
}

}  // namespace detail

inline std::string trained_byte_bpe::vocab_json() const {
  std::string out = "{";
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    out += id ? ",\n  " : "\n  ";
    out += detail::json_quoted(tokens[id]) + ": " + std::to_string(id);
  }
  return out + "\n}\n";
}

inline std::string trained_byte_bpe::merges_txt() const {
  std::string out = "#version: 0.2\n";
  for (const auto& [a, b] : merges) out += a + " " + b + "\n";
  return out;
}

inline std::string trained_byte_bpe::tokenizer_config_json() {
  return "{\n"
         "  \"add_bos_token\": true,\n"
         "  \"add_prefix_space\": false,\n"
         "  \"bos_token\": \"</s>\",\n"
         "  \"clean_up_tokenization_spaces\": false,\n"
         "  \"eos_token\": \"</s>\",\n"
         "  \"errors\": \"replace\",\n"
         "  \"pad_token\": \"<pad>\",\n"
         "  \"tokenizer_class\": \"GPT2Tokenizer\",\n"
         "  \"unk_token\": \"</s>\"\n"
         "}\n";
}

// Trains on `lines` (see the header comment). value_error when options.vocab_size < 260 (the specials
// and the byte symbols) or options.min_frequency < 1.
inline trained_byte_bpe train_byte_bpe(std::span<const std::string> lines, const bpe_training_options& options = {}) {
  constexpr std::size_t base = opt_special_tokens.size() + 256;
  BLIP2_CHECK(options.vocab_size >= base, value_error, "train_byte_bpe: vocab_size ", options.vocab_size,
              " is below ", base, " (4 special tokens + 256 byte symbols)");
  BLIP2_CHECK(options.min_frequency >= 1, value_error, "train_byte_bpe: min_frequency ", options.min_frequency,
              " must be >= 1");
  trained_byte_bpe out;
  std::unordered_map<std::string, std::int32_t> id_of;
  auto add_token = [&](std::string t) {
    const auto [it, fresh] = id_of.emplace(t, static_cast<std::int32_t>(out.tokens.size()));
    if (fresh) out.tokens.push_back(std::move(t));
    return it->second;
  };
  for (const auto s : opt_special_tokens) add_token(std::string(s));
  std::array<std::int32_t, 256> byte_id{};
  for (const auto b : detail::bytes_in_symbol_order) {
    std::string sym;
    utf8_append(sym, byte_bpe::byte_to_symbol[b]);
    byte_id[b] = add_token(std::move(sym));
  }

  // ---- 1. pre-tokens and their frequencies ----
  std::unordered_map<std::string, std::int64_t> freq;
  auto count_text = [&](std::string_view text) {
    byte_bpe::pretokenize(text, [&](std::string_view piece) { ++freq[std::string(piece)]; });
  };
  for (const auto& raw : lines) {
    std::string line;
    if (is_valid_utf8(raw)) {
      line = raw;
    } else {
      for (const char32_t c : utf8_decode_lossy(raw)) utf8_append(line, c);
    }
    std::size_t chunk = 0;  // split out the special tokens, leftmost first (none is a prefix of another)
    for (std::size_t i = 0; i < line.size(); ++i)
      for (const auto s : opt_special_tokens)
        if (std::string_view(line).substr(i, s.size()) == s) {
          count_text(std::string_view(line).substr(chunk, i - chunk));
          chunk = i + s.size();
          i = chunk - 1;
          break;
        }
    count_text(std::string_view(line).substr(chunk));
  }

  // ---- 2. each distinct pre-token as byte symbols ----
  std::vector<std::vector<std::int32_t>> words;
  std::vector<std::int64_t> word_freq;
  words.reserve(freq.size());
  for (const auto& [piece, n] : freq) {
    std::vector<std::int32_t> w(piece.size());
    for (std::size_t i = 0; i < piece.size(); ++i) w[i] = byte_id[static_cast<unsigned char>(piece[i])];
    words.push_back(std::move(w));
    word_freq.push_back(n);
  }

  // ---- 3. pair counts, the words that hold each pair, and a heap of (count, pair) ----
  std::unordered_map<std::uint64_t, std::int64_t> pair_count;
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> where;  // may list a word twice, or stale
  struct candidate {
    std::int64_t count;
    std::int32_t left, right;
    // the heap's top is the largest: the highest count, then the smallest (left, right)
    bool operator<(const candidate& o) const {
      if (count != o.count) return count < o.count;
      return left != o.left ? left > o.left : right > o.right;
    }
  };
  std::priority_queue<candidate> heap;
  for (std::uint32_t wi = 0; wi < words.size(); ++wi) {
    const auto& w = words[wi];
    for (std::size_t i = 0; i + 1 < w.size(); ++i) {
      const auto k = detail::pair_key(w[i], w[i + 1]);
      pair_count[k] += word_freq[wi];
      auto& list = where[k];
      if (list.empty() || list.back() != wi) list.push_back(wi);
    }
  }
  for (const auto& [k, n] : pair_count)
    heap.push({n, static_cast<std::int32_t>(k >> 32), static_cast<std::int32_t>(k & 0xFFFFFFFFu)});

  // ---- 4. merge until the vocabulary is full or no pair is frequent enough ----
  std::vector<std::uint32_t> last_seen(words.size(), ~0u);  // the merge that last recounted a word
  std::vector<std::uint64_t> touched;
  while (out.tokens.size() < options.vocab_size && !heap.empty()) {
    const candidate top = heap.top();
    heap.pop();
    const auto key = detail::pair_key(top.left, top.right);
    const auto it = pair_count.find(key);
    if (it == pair_count.end() || it->second != top.count) continue;  // stale: a fresher entry exists
    if (top.count < options.min_frequency) break;
    const auto rank = static_cast<std::uint32_t>(out.merges.size());
    out.merges.emplace_back(out.tokens[static_cast<std::size_t>(top.left)], out.tokens[static_cast<std::size_t>(top.right)]);
    out.merge_counts.push_back(top.count);
    const std::int32_t merged = add_token(out.merges.back().first + out.merges.back().second);
    pair_count.erase(it);  // every occurrence goes now, and A B cannot become adjacent again
    touched.clear();
    const auto holders = std::move(where[key]);
    where.erase(key);
    for (const auto wi : holders) {
      if (last_seen[wi] == rank) continue;
      last_seen[wi] = rank;
      auto& w = words[wi];
      const std::int64_t n = word_freq[wi];
      // take the word's pairs out, merge every non-overlapping occurrence left to right, put them back
      for (std::size_t i = 0; i + 1 < w.size(); ++i) {
        const auto k = detail::pair_key(w[i], w[i + 1]);
        if (k == key) continue;
        pair_count[k] -= n;
        touched.push_back(k);
      }
      std::size_t j = 0;
      for (std::size_t i = 0; i < w.size(); ++i, ++j) {
        if (i + 1 < w.size() && w[i] == top.left && w[i + 1] == top.right) {
          w[j] = merged;
          ++i;
        } else {
          w[j] = w[i];
        }
      }
      w.resize(j);
      for (std::size_t i = 0; i + 1 < w.size(); ++i) {
        const auto k = detail::pair_key(w[i], w[i + 1]);
        pair_count[k] += n;
        touched.push_back(k);
        if (w[i] == merged || w[i + 1] == merged) where[k].push_back(wi);  // a pair this merge made
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (const auto k : touched) {
      const auto c = pair_count.find(k);
      if (c->second <= 0) {
        pair_count.erase(c);
        where.erase(k);
        continue;
      }
      heap.push({c->second, static_cast<std::int32_t>(k >> 32), static_cast<std::int32_t>(k & 0xFFFFFFFFu)});
    }
  }
  return out;
}

}  // namespace blip2::io
