// fuzz_tokenizer: libFuzzer target for the BERT tokenizer and LAVIS's caption pre-processing
// (blip2/io/bert_tokenizer.hpp: tokenize, encode, encode_batch, bert_basic_tokenize, lavis_caption).
//
// Build and run (clang 14 + libclang-rt-14-dev; one core, three minutes):
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLIP2_BUILD_FUZZERS=ON
//   cmake --build build-fuzz --target fuzz_tokenizer -j2
//   mkdir -p build-fuzz/corpus_tok
//   build-fuzz/tests/fuzz_tokenizer build-fuzz/corpus_tok tests/fuzz/corpus_tokenizer
//       -dict=tests/fuzz/tokenizer.dict -max_len=2048 -len_control=0 -jobs=1 -max_total_time=180
// (one command: the two lines joined; no backslash here, which g++'s -Wcomment would flag)
// (-len_control=0 lets inputs reach max_len at once, so words over 100 code points and long captions
// come early; without it libFuzzer grows the length limit slowly, to 272 bytes in 3 minutes here.)
// (With -jobs the log goes to fuzz-0.log in the current directory; new inputs land in build-fuzz/corpus_tok,
// the seeds in tests/fuzz/corpus_tokenizer are only read. A crash writes crash-<sha1>: replay it with
// `build-fuzz/tests/fuzz_tokenizer crash-<sha1>`.)
//
// The first input byte picks max_length (2..41) and max_words (0..7, or 50); the rest is the text, any
// bytes at all (invalid UTF-8 included: the tokenizer replaces and drops it, documented).
// What counts as a bug, besides what ASan/UBSan catch:
//   - any exception escaping (libFuzzer reports it as a crash): these calls are documented never to throw
//     for max_length >= 2, so not even a blip2::error is expected;
//   - a token that is empty, or neither in the vocabulary nor [UNK] nor a special token written in the text;
//   - an id outside [0, vocab_size()] (vocab_size() itself only as dec_id());
//   - encode() longer than max_length or shorter than 2, not [CLS] ... [SEP], or not the prefix of the
//     untruncated ids; encode_batch() rows other than encode()'s plus [PAD] with mask 0;
//   - a basic-tokenizer word that is empty or holds whitespace, a control code point or invalid UTF-8;
//   - lavis_caption() output that is invalid UTF-8, has leading/trailing ' ', two whitespace code points
//     in a row, one of . ! " ( ) * # : ; ~, or more than max_words words.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/io/bert_tokenizer.hpp"

namespace {

[[noreturn]] void oracle_failed(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer: oracle failed: %s\n", what);
  std::abort();
}

// A small vocabulary with every printable ASCII character (alone and as ##continuation), some words and
// pieces, and non-ASCII pieces the normalisation produces (CJK, Hangul jamo, Greek, ß).
const blip2::io::bert_tokenizer& tokenizer() {
  static const blip2::io::bert_tokenizer tok = [] {
    std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (char c = 33; c < 127; ++c) {
      v.emplace_back(1, c);
      v.push_back("##" + std::string(1, c));
    }
    for (const char* w : {"the", "a", "dog", "un", "##want", "##ed", "runn", "##ing", "##s", "in", "##in", "ab",
                          "##ab", "\u4e16", "\u754c", "\u1112", "##\u1161", "##\u11ab", "\u03c3", "##\u03c3",
                          "\u03c2", "\u00df", "##\u00df", "i", "##i"})
      v.emplace_back(w);
    v.emplace_back("a");  // a duplicate: the last id wins
    return blip2::io::bert_tokenizer::from_vocab(std::move(v), "<fuzz vocab>");
  }();
  return tok;
}

bool is_special(std::string_view t) {
  return t == "[UNK]" || t == "[SEP]" || t == "[PAD]" || t == "[CLS]" || t == "[MASK]" || t == "[DEC]";
}

void check_ids(const blip2::io::bert_tokenizer& tok, const std::vector<std::int64_t>& ids) {
  for (const auto id : ids) {
    if (id < 0 || id > static_cast<std::int64_t>(tok.vocab_size())) oracle_failed("id out of range");
    if (id == static_cast<std::int64_t>(tok.vocab_size()) && id != tok.dec_id()) oracle_failed("id == vocab_size");
  }
}

std::vector<std::int64_t> check_encode(const blip2::io::bert_tokenizer& tok, std::string_view text,
                                       std::size_t max_length, const std::vector<std::int64_t>& token_ids) {
  const auto e = tok.encode(text, max_length);
  if (e.size() > max_length || e.size() < 2) oracle_failed("encode length");
  if (e.front() != tok.cls_id() || e.back() != tok.sep_id()) oracle_failed("encode: not [CLS] ... [SEP]");
  check_ids(tok, e);
  // the untruncated ids, cut: the same as encode's
  const std::size_t body = std::min(token_ids.size(), max_length - 2);
  if (e.size() != body + 2) oracle_failed("encode: truncation length");
  for (std::size_t k = 0; k < body; ++k)
    if (e[k + 1] != token_ids[k]) oracle_failed("encode: not the prefix of tokenize's ids");
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& tok = tokenizer();
  const std::uint8_t opt = size ? data[0] : 0;
  const std::size_t max_length = 2 + opt % 40;
  const std::size_t max_words = (opt >> 5) == 7 ? 50 : (opt >> 5);
  const std::string text(reinterpret_cast<const char*>(data) + (size ? 1 : 0), size ? size - 1 : 0);

  // tokenize: every token known, every id in range
  const auto tokens = tok.tokenize(text);
  std::vector<std::int64_t> token_ids;
  for (const auto& t : tokens) {
    if (t.empty()) oracle_failed("empty token");
    if (!blip2::is_valid_utf8(t)) oracle_failed("token is invalid UTF-8");
    const auto id = tok.token_id(t);
    if (id == tok.unk_id() && t != "[UNK]" && !is_special(t)) oracle_failed("token not in the vocabulary");
    if (is_special(t) && text.find(t) == std::string::npos && t != "[UNK]") oracle_failed("special from nowhere");
    token_ids.push_back(id);
  }
  check_ids(tok, token_ids);
  const auto text_ids = check_encode(tok, text, max_length, token_ids);

  // the basic tokenizer's words: no whitespace, no control code point, valid UTF-8, not empty
  for (const auto& w : blip2::io::bert_basic_tokenize(text)) {
    if (w.empty() || !blip2::is_valid_utf8(w)) oracle_failed("basic word empty or invalid UTF-8");
    for (const char32_t c : blip2::utf8_decode_lossy(w)) {
      const auto f = blip2::io::unicode::flags(c);
      if (f & (blip2::io::unicode::flag_hf_space | blip2::io::unicode::flag_py_space)) oracle_failed("space in a word");
      if (f & blip2::io::unicode::flag_control) oracle_failed("control code point in a word");
    }
  }

  // LAVIS captions
  const auto cap = blip2::io::lavis_caption(text, max_words);
  if (!blip2::is_valid_utf8(cap)) oracle_failed("caption is invalid UTF-8");
  if (!cap.empty() && (cap.front() == ' ' || cap.back() == ' ')) oracle_failed("caption not stripped");
  const auto cps = blip2::utf8_decode_lossy(cap);
  std::size_t words = cap.empty() ? 0 : 1;
  for (std::size_t k = 0; k < cps.size(); ++k) {
    const char32_t c = cps[k];
    if (std::u32string_view(U".!\"()*#:;~").find(c) != std::u32string_view::npos) oracle_failed("LAVIS punctuation left");
    const bool space = blip2::io::unicode::flags(c) & blip2::io::unicode::flag_py_space;
    if (space && k + 1 < cps.size() && (blip2::io::unicode::flags(cps[k + 1]) & blip2::io::unicode::flag_py_space))
      oracle_failed("whitespace run left in a caption");
    if (c == U' ') ++words;
  }
  if (words > max_words) oracle_failed("caption over max_words");
  std::vector<std::int64_t> cap_ids;
  for (const auto& t : tok.tokenize(cap)) cap_ids.push_back(tok.token_id(t));
  const auto caption_ids = check_encode(tok, cap, max_length, cap_ids);

  // encode_batch: encode's rows, padded
  const std::vector<std::string> texts = {text, cap};
  const auto b = tok.encode_batch(texts, max_length);
  if (b.batch != 2 || b.input_ids.size() != 2 * b.length || b.attention_mask.size() != 2 * b.length)
    oracle_failed("encode_batch sizes");
  if (b.length > max_length) oracle_failed("encode_batch longer than max_length");
  for (std::size_t r = 0; r < 2; ++r) {
    const auto& row = r == 0 ? text_ids : caption_ids;
    for (std::size_t k = 0; k < b.length; ++k) {
      const bool in = k < row.size();
      if (b.input_ids[r * b.length + k] != (in ? row[k] : tok.pad_id())) oracle_failed("encode_batch ids");
      if (b.attention_mask[r * b.length + k] != (in ? 1 : 0)) oracle_failed("encode_batch mask");
    }
  }
  return 0;
}
