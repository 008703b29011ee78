// blip2/eval/caption_ngrams.hpp: what the COCO caption evaluation (pycocoevalcap) scores a caption from:
// its tokens and the counts of its n-grams, n = 1..4. Shared by eval/bleu.hpp and eval/cider.hpp.
//
// TOKENIZATION. pycocoevalcap runs Stanford's PTBTokenizer (-lowerCase) on every caption, drops the tokens
// that are punctuation (' '' ` `` . ? ! , : ; - -- ... and the brackets -LRB- -RRB- -LCB- -RCB-), and the
// scorers then split the result at spaces. We have no Java here; coco_caption_tokens() does this instead:
//   1. ASCII letters are lowercased;
//   2. whitespace and the characters  . , ? ! : ; " ` ( ) [ ] { }  separate tokens (and are dropped);
//   3. leading and trailing ' and - are stripped from each token; a token left empty is dropped
//      (so "-", "--", "'" and "''" vanish as PTB's list has them vanish; "t-shirt" stays one token, as
//      in PTB).
// On captions made of lowercase words, spaces and sentence punctuation, which is every caption of the
// synthetic world (examples/support/synthetic_shapes.hpp: words from a fixed vocabulary, one space
// between them) and what a model generates from it, the result is the PTB tokenizer's, token for token.
// It differs where PTB splits inside a word: clitics ("don't" -> "do n't", "dog's" -> "dog 's", kept
// whole here), and periods inside numbers or abbreviations ("3.5", "u.s.", split here). Non-ASCII
// letters are left as they are (PTB lowercases them). Text that is already PTB-tokenized and cleaned
// comes through unchanged except for tokens that start or end with ' (such as 's).
//
// N-GRAMS. An n-gram is keyed by its words joined with one space (tokens hold no space, so the key is
// unambiguous). Counts live in ordered maps, so every sum over n-grams runs in one fixed order and a
// score is the same number on every platform.
#pragma once
#include <array>
#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// The longest n-gram that BLEU-4 and CIDEr-D count (pycocoevalcap's n = 4 for both).
inline constexpr int caption_max_n = 4;

// One image of a caption evaluation: the caption a model wrote and the human (or world) references.
struct caption_example {
  std::string candidate;
  std::vector<std::string> references;  // at least one
};

// The tokens of a caption (see TOKENIZATION above).
inline std::vector<std::string> coco_caption_tokens(std::string_view text) {
  auto separates = [](char ch) {
    switch (ch) {
      case ' ': case '\t': case '\n': case '\r': case '\v': case '\f':
      case '.': case ',': case '?': case '!': case ':': case ';':
      case '"': case '`': case '(': case ')': case '[': case ']': case '{': case '}':
        return true;
      default:
        return false;
    }
  };
  auto joiner = [](char ch) { return ch == '\'' || ch == '-'; };
  std::vector<std::string> tokens;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && separates(text[i])) ++i;
    std::size_t j = i;
    while (j < text.size() && !separates(text[j])) ++j;
    std::size_t b = i, e = j;  // [b, e): the piece, then without its leading / trailing ' and -
    while (b < e && joiner(text[b])) ++b;
    while (e > b && joiner(text[e - 1])) --e;
    if (b < e) {
      std::string t(text.substr(b, e - b));
      for (char& ch : t)
        if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
      tokens.push_back(std::move(t));
    }
    i = j;
  }
  return tokens;
}

// The n-grams of one caption, n = 1..caption_max_n.
struct caption_ngrams {
  index_t words = 0;  // the caption's length in tokens
  // counts[n - 1]: each n-gram ("w1 ... wn") -> its occurrences in the caption
  std::array<std::map<std::string, index_t, std::less<>>, caption_max_n> counts;
};

inline caption_ngrams count_ngrams(std::span<const std::string> tokens) {
  caption_ngrams ng;
  ng.words = static_cast<index_t>(tokens.size());
  for (std::size_t n = 1; n <= static_cast<std::size_t>(caption_max_n); ++n)
    for (std::size_t i = 0; i + n <= tokens.size(); ++i) {
      std::string key = tokens[i];
      for (std::size_t k = 1; k < n; ++k) (key += ' ') += tokens[i + k];
      ++ng.counts[n - 1][key];
    }
  return ng;
}
// The n-grams of a caption after coco_caption_tokens().
inline caption_ngrams count_ngrams(std::string_view text) {
  const std::vector<std::string> tokens = coco_caption_tokens(text);
  return count_ngrams(std::span<const std::string>(tokens));
}

}  // namespace blip2
