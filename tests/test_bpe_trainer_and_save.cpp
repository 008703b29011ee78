// bpe_trainer_and_save: io/bpe_trainer.hpp (byte-level BPE trained on lines, written as OPT's tokenizer
// files): hand-worked merge orders, Hugging Face tokenizers' merges, round trips through load_opt_tokenizer.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blip2/io/bpe_trainer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "harness/expect_error.hpp"
#include "harness/temp_dir.hpp"

using namespace blip2;
using blip2::testing::has;
using blip2::testing::message_of;
using blip2::testing::temp_dir;
namespace fs = std::filesystem;
using strings = std::vector<std::string>;
using merge_list = std::vector<std::pair<std::string, std::string>>;
using ids = std::vector<std::int64_t>;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Text the demo's LM will see: captions and questions about a synthetic world, plus text that exercises
// the pre-tokenizer (runs of spaces, tabs, newlines, digits, contractions, non-ASCII letters).
strings demo_corpus() {
  strings lines;
  const char* colours[] = {"red", "green", "blue", "yellow"};
  const char* shapes[] = {"circle", "square", "triangle"};
  for (const char* c : colours)
    for (const char* s : shapes) {
      lines.push_back(std::string("a photo of a small ") + c + " " + s + "\n");
      lines.push_back(std::string("a large ") + c + " " + s + " left of a " + c + " circle\n");
      lines.push_back(std::string("Question: what colour is the ") + s + "? Short answer: " + c);
    }
  for (const char* odd : {"it's  two\tcircles", "  leading spaces", "trailing spaces  ", "x\n\ny", "42 shapes, 7 colours",
                          "naïve café – 東京 ☃", "don't we'll they're I'm", "", " ", "\n"})
    lines.emplace_back(odd);
  return lines;
}

// The tokenizer a directory holds must encode each line and decode it back exactly.
void expect_round_trip(const io::byte_bpe_tokenizer& tok, const strings& lines) {
  for (const auto& line : lines) {
    CAPTURE(line);
    const auto got = tok.encode(line);
    REQUIRE(!got.empty());
    CHECK(got[0] == 2);  // BOS </s>
    for (const auto id : got) CHECK(id < static_cast<std::int64_t>(tok.size()));
    CHECK(tok.decode(got, true) == line);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// BPE training
// ---------------------------------------------------------------------------------------------------

TEST_CASE("train_byte_bpe: a hand-worked corpus learns its merges in the stated order") {
  // Pre-tokens (Ġ is the space): "hug" x1, "Ġhug" x2, "pug" x1, "Ġpug" x1, "hugs" x1.
  // Pair counts: (u,g) 6, (h,u) 4, (Ġ,h) 2, (p,u) 2, (Ġ,p) 1, (g,s) 1
  //   merge 0: u g   (6)  -> hug: h ug; Ġhug: Ġ h ug; pug: p ug; Ġpug: Ġ p ug; hugs: h ug s
  //   now (h,ug) 4, (Ġ,h) 2, (p,ug) 2, (Ġ,p) 1, (ug,s) 1
  //   merge 1: h ug  (4)  -> now (Ġ,hug) 2, (p,ug) 2, (Ġ,p) 1, (hug,s) 1
  //   merge 2: p ug  (2)  the tie with (Ġ,hug) goes to the smaller left id: "p" is 83 (4 + 0x70 - 0x21), "Ġ" 224
  //   merge 3: Ġ hug (2)  -> (Ġ,pug) 1 and (hug,s) 1 are left: no pair occurs twice, training stops
  const strings lines = {"hug hug hug", "pug pug", "hugs"};
  const auto bpe = io::train_byte_bpe(lines, {.vocab_size = 1000});
  CHECK(bpe.merges == merge_list{{"u", "g"}, {"h", "ug"}, {"p", "ug"}, {"\xC4\xA0", "hug"}});
  CHECK(bpe.merge_counts == std::vector<std::int64_t>{6, 4, 2, 2});
  REQUIRE(bpe.tokens.size() == 264);
  CHECK(bpe.tokens[260] == "ug");
  CHECK(bpe.tokens[261] == "hug");
  CHECK(bpe.tokens[262] == "pug");
  CHECK(bpe.tokens[263] == "\xC4\xA0hug");
  // encode applies the merges by rank: " pug" is Ġ pug (merge 3 needs "hug")
  const auto tok = bpe.tokenizer();
  CHECK(tok.encode("hug hug hug") == ids{2, 261, 263, 263});
  CHECK(tok.encode("pug pug") == ids{2, 262, 224, 262});
  CHECK(tok.encode("hugs") == ids{2, 261, 4 + 0x73 - 0x21});  // "s" is a byte symbol

  // the two stopping rules
  const auto two = io::train_byte_bpe(lines, {.vocab_size = 262});  // room for two merges
  CHECK(two.merges == merge_list{{"u", "g"}, {"h", "ug"}});
  CHECK(two.tokens.size() == 262);
  const auto five = io::train_byte_bpe(lines, {.vocab_size = 1000, .min_frequency = 5});  // only (u,g) occurs 5 times
  CHECK(five.merges == merge_list{{"u", "g"}});
  const auto none = io::train_byte_bpe(lines, {.vocab_size = 260});
  CHECK(none.merges.empty());
  CHECK(none.tokens.size() == 260);
}

TEST_CASE("train_byte_bpe: ties, overlapping pairs and special tokens") {
  // (x,y) and (y,z) both occur twice: the smaller left id wins ("x" < "y"), then xy z.
  CHECK(io::train_byte_bpe(strings{"xyz", "xyz"}).merges == merge_list{{"x", "y"}, {"xy", "z"}});
  // (a,b) and (a,c) tie with the same left id: the smaller right id wins.
  CHECK(io::train_byte_bpe(strings{"ac", "ab", "ac", "ab"}).merges == merge_list{{"a", "b"}, {"a", "c"}});
  // "aaa" holds (a,a) twice (overlapping occurrences count, as BpeTrainer counts them); merging leaves aa a.
  const auto aaa = io::train_byte_bpe(strings{"aaa"});
  CHECK(aaa.merges == merge_list{{"a", "a"}});
  CHECK(aaa.merge_counts == std::vector<std::int64_t>{2});
  CHECK(aaa.tokenizer().encode("aaa") == ids{2, 260, 4 + 'a' - 0x21});
  // The special tokens are split out of the text as the tokenizer splits them: their characters never merge.
  CHECK(io::train_byte_bpe(strings{"</s><pad></s>", "</s><pad></s>", "<s><unk>"}).merges.empty());
  const auto around = io::train_byte_bpe(strings{"ab</s>ab", "ab"});  // "ab" three times, never "b<"
  CHECK(around.merges == merge_list{{"a", "b"}});
  // Bad options
  CHECK(has(message_of<value_error>([] { io::train_byte_bpe(strings{"a"}, {.vocab_size = 259}); }), "below 260"));
  CHECK(has(message_of<value_error>([] { io::train_byte_bpe(strings{"a"}, {.vocab_size = 300, .min_frequency = 0}); }),
            "min_frequency"));
}

TEST_CASE("train_byte_bpe: the files load with load_opt_tokenizer in OPT's id convention and round-trip the corpus") {
  const auto lines = demo_corpus();
  const auto bpe = io::train_byte_bpe(lines, {.vocab_size = 330});
  CHECK(bpe.tokens.size() == 330);  // the vocabulary is full: this corpus has more pairs that occur twice
  CHECK(bpe.merges.size() == 70);
  for (std::size_t r = 1; r < bpe.merge_counts.size(); ++r) CHECK(bpe.merge_counts[r] <= bpe.merge_counts[r - 1]);
  temp_dir dir;
  const auto files = bpe.files();
  std::ofstream(dir / "vocab.json") << files.vocab_json;
  std::ofstream(dir / "merges.txt") << files.merges_txt;
  std::ofstream(dir / "tokenizer_config.json") << files.tokenizer_config_json;
  CHECK(files.merges_txt.rfind("#version: 0.2\n", 0) == 0);
  const auto tok = io::load_opt_tokenizer(dir.path);
  CHECK(tok.size() == 330);
  // ids: <s> 0, <pad> 1, </s> 2, <unk> 3, then the byte symbols in bytes_to_unicode order
  CHECK(tok.find("<s>") == 0);
  CHECK(tok.find("<pad>") == 1);
  CHECK(tok.find("</s>") == 2);
  CHECK(tok.find("<unk>") == 3);
  CHECK(tok.find("!") == 4);
  CHECK(tok.find("\xC3\xBF") == 191);  // "ÿ" (0xFF), the last printable byte
  CHECK(tok.find("\xC4\x80") == 192);  // "Ā" (byte 0x00), the first remapped one
  CHECK(tok.find("\xC4\xA0") == 224);  // "Ġ" (space)
  CHECK(tok.find("\xC4\x8A") == 4 + 188 + 10);  // "Ċ" (newline)
  CHECK(tok.find("\xC5\x83") == 259);  // "Ń" (0xAD), the last
  CHECK(tok.find(bpe.merges[0].first + bpe.merges[0].second) == 260);
  // OPT's options
  CHECK(tok.bos_id() == 2);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.pad_id() == 1);
  CHECK(tok.options().add_bos_token);
  CHECK_FALSE(tok.options().clean_up_tokenization_spaces);
  CHECK(tok.token_id("\n") == 4 + 188 + 10);
  expect_round_trip(tok, lines);
  // the merges compress the training text: its captions take far fewer tokens than bytes
  std::size_t bytes = 0, tokens = 0;
  for (const auto& l : lines) bytes += l.size(), tokens += tok.encode(l, false).size();
  CHECK(tokens * 2 < bytes);
  // bpe.tokenizer() is the same tokenizer
  const auto same = bpe.tokenizer();
  for (const auto& l : lines) CHECK(same.encode(l) == tok.encode(l));
  // read_bpe_tokenizer_files gives the texts back
  const auto again = io::read_bpe_tokenizer_files(dir.path);
  CHECK(again.vocab_json == files.vocab_json);
  CHECK(again.merges_txt == files.merges_txt);
  CHECK(again.tokenizer_config_json == files.tokenizer_config_json);
  CHECK(again.added_tokens_json.empty());
}

TEST_CASE("train_byte_bpe: trained to the end, no pair of tokens occurs twice in the encoded corpus") {
  // The stopping rule seen from the tokenizer: encode each pre-token of the corpus with the trained files and
  // count the adjacent token pairs (within pre-tokens, weighted as the trainer weights them); the trainer
  // stopped because none occurs twice, so none may. This also checks that encode() segments the training
  // text as the trainer did.
  const auto lines = demo_corpus();
  const auto bpe = io::train_byte_bpe(lines, {.vocab_size = 100000});
  CHECK(bpe.tokens.size() < 100000);
  CHECK(bpe.merge_counts.back() >= 2);
  const auto tok = bpe.tokenizer();
  std::map<std::pair<std::int64_t, std::int64_t>, int> pairs;
  for (const auto& line : lines)
    io::byte_bpe::pretokenize(line, [&](std::string_view piece) {
      const auto t = tok.encode(piece, false);
      for (std::size_t i = 0; i + 1 < t.size(); ++i) ++pairs[{t[i], t[i + 1]}];
    });
  CHECK_FALSE(pairs.empty());
  int most = 0;
  for (const auto& [p, n] : pairs) most = std::max(most, n);
  CHECK(most == 1);
  // one merge fewer: the last merged pair is there again, as often as it was counted
  const auto less = io::train_byte_bpe(lines, {.vocab_size = bpe.tokens.size() - 1});
  REQUIRE(less.merges.size() + 1 == bpe.merges.size());
  const auto tl = less.tokenizer();
  const auto a = tl.find(bpe.merges.back().first), b = tl.find(bpe.merges.back().second);
  REQUIRE((a && b));
  std::int64_t seen = 0;
  for (const auto& line : lines)
    io::byte_bpe::pretokenize(line, [&](std::string_view piece) {
      const auto t = tl.encode(piece, false);
      for (std::size_t i = 0; i + 1 < t.size(); ++i) seen += t[i] == *a && t[i + 1] == *b;
    });
  CHECK(seen == bpe.merge_counts.back());
}

TEST_CASE("train_byte_bpe: the merges of Hugging Face tokenizers' BpeTrainer") {
  // tests/fixtures/make_bpe_train_fixtures.js: tokenizers 0.23.2's BpeTrainer on corpus.txt with GPT-2's
  // byte-level pre-tokenizer, trained until no pair is left (its min_frequency 0 = our 1); many of the late
  // merges are ties between pairs that occur once, so this checks the tie rule too
  const fs::path dir = fs::path(BLIP2_FIXTURE_DIR) / "bpe_train";
  strings lines;
  {
    std::istringstream in(read_file(dir / "corpus.txt"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  REQUIRE(lines.size() == 130);
  merge_list want;
  {
    std::istringstream in(read_file(dir / "merges.txt"));
    std::string line;
    REQUIRE(std::getline(in, line));
    CHECK(line == "#version: 0.2");
    while (std::getline(in, line)) {
      const auto space = line.find(' ');
      REQUIRE(space != std::string::npos);
      want.emplace_back(line.substr(0, space), line.substr(space + 1));
    }
  }
  const auto all = io::train_byte_bpe(lines, {.vocab_size = 100000, .min_frequency = 1});
  CHECK(all.merges.size() == want.size());
  for (std::size_t r = 0; r < std::min(all.merges.size(), want.size()); ++r) {
    CAPTURE(r);
    CHECK(all.merges[r] == want[r]);
  }
  // min_frequency 2 stops at the first merge of a pair that occurs once: a prefix of the same list
  const auto two = io::train_byte_bpe(lines, {.vocab_size = 100000});
  REQUIRE(two.merges.size() < all.merges.size());
  CHECK(merge_list(all.merges.begin(), all.merges.begin() + static_cast<std::ptrdiff_t>(two.merges.size())) == two.merges);
  CHECK(all.merge_counts[two.merges.size()] == 1);
  CHECK(two.merge_counts.back() >= 2);
  expect_round_trip(all.tokenizer(), lines);
}
