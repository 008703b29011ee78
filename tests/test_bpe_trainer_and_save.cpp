// bpe_trainer_and_save: io/bpe_trainer.hpp (byte-level BPE trained on lines, written as OPT's tokenizer
// files) and io/save_blip2_opt.hpp (Blip2ForConditionalGeneration and OPTForCausalLM directories written
// from C++ models), by hand-worked merge orders, round trips through the loaders, stage2_forward on a
// saved copy of tests/fixtures/stage2_opt, and the caption program on saved directories (when built).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/bpe_trainer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/io/save_blip2_opt.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"
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

const fs::path fixture = fs::path(BLIP2_FIXTURE_DIR) / "stage2_opt";

std::string read_file(const fs::path& p) { return blip2::testing::read_text(p); }

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

// Every tensor of `a` is in `b` with the same dtype, shape and bytes, and `b` has no other.
void expect_same_tensors(const fs::path& a, const fs::path& b) {
  const auto fa = safetensors_file::open(a), fb = safetensors_file::open(b);
  const auto na = fa.names(), nb = fb.names();
  CHECK(std::set<std::string>(na.begin(), na.end()) == std::set<std::string>(nb.begin(), nb.end()));
  for (const auto& name : na) {
    CAPTURE(name);
    REQUIRE(fb.contains(name));
    CHECK(fa.info(name).dtype == fb.info(name).dtype);
    CHECK(fa.info(name).shape == fb.info(name).shape);
    const auto x = fa.bytes(name), y = fb.bytes(name);
    REQUIRE(x.size() == y.size());
    CHECK(std::memcmp(x.data(), y.data(), x.size()) == 0);
  }
}

// Deterministic, distinct values (so a swapped or transposed tensor shows).
template <class T>
void fill_pattern(std::span<T> p, double scale = 0.05) {
  std::uint64_t s = 0x9E3779B97F4A7C15ull;
  for (auto& x : p) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    x = static_cast<T>(scale * (static_cast<double>(s % 2001) / 1000.0 - 1.0));
  }
}

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p)); }

// The siblings a save leaves beside `dir` (none when it cleaned up).
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir.parent_path())) {
    const auto n = e.path().filename().string();
    if (n.rfind(dir.filename().string() + ".", 0) == 0) out.push_back(n);
  }
  return out;
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

// ---------------------------------------------------------------------------------------------------
// Saving checkpoint directories
// ---------------------------------------------------------------------------------------------------

TEST_CASE("save_blip2_opt: the fixture's model saved and reloaded has every tensor equal and the same stage-2 loss") {
  const auto model = load_blip2_opt<float>(fixture);
  const auto vit = load_vision_model<float>(fixture);
  temp_dir dir;
  const auto out = dir / "saved";
  save_blip2_opt(out, vit, model, io::read_bpe_tokenizer_files(fixture));
  CHECK(leftovers(out).empty());
  // the weights: the same names, dtypes, shapes and bytes as the fixture's file; "format": "pt"
  expect_same_tensors(fixture / "model.safetensors", out / "model.safetensors");
  CHECK(safetensors_file::open(out / "model.safetensors").metadata().at("format") == "pt");
  // the tokenizer files are copied as they are
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"}) CHECK(read_file(out / f) == read_file(fixture / f));
  // config.json: every field the loaders read is the fixture's
  auto a = read_json(fixture / "config.json"), b = read_json(out / "config.json");  // (operator[] of a missing key: null)
  CHECK(b["architectures"] == a["architectures"]);
  CHECK(b["model_type"] == "blip-2");
  CHECK(b["num_query_tokens"] == a["num_query_tokens"]);
  CHECK(b["image_text_hidden_size"] == a["image_text_hidden_size"]);
  CHECK(b["text_config"] == a["text_config"]);  // the full OPTConfig dict, field for field
  CHECK(b["vision_config"] == a["vision_config"]);
  for (const auto& item : a["qformer_config"].items()) {
    const std::string key = item.key();  // (clang 14 cannot capture a structured binding in CAPTURE's lambda)
    CAPTURE(key);
    CHECK(b["qformer_config"][key] == item.value());
  }
  // reloaded: stage2_forward gives the identical loss
  const auto reloaded = load_blip2_opt<float>(out);
  const auto inputs = safetensors_file::open(fixture / "inputs.safetensors");
  const auto img = inputs.load_dynamic<float>("image_embeds");
  const auto input_ids = inputs.load_i64<2>("input_ids");
  const auto mask = inputs.load_i64<2>("attention_mask");
  const auto labels = inputs.load_i64<2>("labels");
  const tensor_view<const float, 3> image(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]});
  reference_backend be;
  stage2_state<float> s1, s2;
  const float l1 = stage2_forward(be, model, s1, image, input_ids.view(), mask.view(), labels.view());
  const float l2 = stage2_forward(be, reloaded, s2, image, input_ids.view(), mask.view(), labels.view());
  CHECK(l1 > 0);
  CHECK(l1 == l2);
  // and the image encoder reloads with the same parameters
  const auto vit2 = load_vision_model<float>(out);
  auto w1 = vit.w, w2 = vit2.w;
  std::vector<float> p1, p2;
  for_each_vision_parameter(vit.config(), w1, [&](const std::string&, auto& v) { p1.insert(p1.end(), v.data(), v.data() + v.size()); });
  for_each_vision_parameter(vit2.config(), w2, [&](const std::string&, auto& v) { p2.insert(p2.end(), v.data(), v.data() + v.size()); });
  CHECK(p1 == p2);
}

TEST_CASE("save_blip2_opt: a stage-1 Q-Former keeps only the query path; a trained tokenizer and a fresh LM load") {
  // The demo's pieces: the fixture's image encoder, a Q-Former with its text side and stage-1 heads, a
  // projection, a small LM made here, and a vocabulary trained on text.
  const auto vit = load_vision_model<float>(fixture);
  const auto bpe = io::train_byte_bpe(demo_corpus(), {.vocab_size = 320});
  qformer_model_config qc;
  qc.qformer.hidden_size = 8, qc.qformer.num_hidden_layers = 2, qc.qformer.num_attention_heads = 2;
  qc.qformer.intermediate_size = 12, qc.qformer.encoder_hidden_size = vit.config().hidden_size;
  qc.qformer.vocab_size = 20, qc.qformer.max_position_embeddings = 8;
  qc.num_query_tokens = 3, qc.image_text_hidden_size = 4, qc.with_text = true, qc.with_stage1_heads = true;
  qformer_model<float> qf(qc);
  fill_pattern(qf.parameters(), 0.5);
  opt_config oc;
  oc.vocab_size = static_cast<index_t>(bpe.tokens.size()), oc.hidden_size = 8, oc.num_hidden_layers = 1;
  oc.num_attention_heads = 2, oc.ffn_dim = 16, oc.max_position_embeddings = 40, oc.word_embed_proj_dim = 8;
  oc.eos_token_id = bpe.tokenizer().token_id("\n");
  opt_model<float> llm(oc);
  fill_pattern(llm.parameters());
  language_projection<float> proj(8, 8);
  fill_pattern(std::span<float>(proj.parameter_view().data(), static_cast<std::size_t>(proj.parameter_view().size())));
  temp_dir dir;
  const auto out = dir / "demo";
  save_blip2_opt(out, vit, qf, proj, llm, bpe.files());
  // the file has only Blip2ForConditionalGeneration's names: none of the text side or stage-1 heads
  const auto f = safetensors_file::open(out / "model.safetensors");
  for (const auto& n : f.names()) {
    CAPTURE(n);
    CHECK_FALSE(n.rfind("embeddings.", 0) == 0);
    CHECK_FALSE(n.rfind("cls.", 0) == 0);
    CHECK_FALSE((n == "vision_projection.weight" || n == "text_projection.weight"));
    CHECK_FALSE(n == "temp");
    CHECK_FALSE(n == "itm_head.weight");
    CHECK_FALSE((has(n, ".intermediate.dense") && n.rfind("qformer.", 0) == 0));  // the text FFN
  }
  CHECK(f.contains("qformer.encoder.layer.1.intermediate_query.dense.weight"));
  CHECK_FALSE(f.contains("language_model.lm_head.weight"));  // tied: not saved, as transformers does
  // it loads: the query path's tensors are the model's, the decoder's too
  const auto back = load_blip2_opt<float>(out);
  auto w1 = qf.w;
  auto w2 = back.qformer.w;
  qformer_model_config query_path = qc;
  query_path.with_text = false, query_path.with_stage1_heads = false;
  std::vector<float> a, b;
  for_each_parameter(query_path, w1, [&](const std::string&, auto& v) { a.insert(a.end(), v.data(), v.data() + v.size()); });
  for_each_parameter(back.qformer.config(), w2, [&](const std::string&, auto& v) { b.insert(b.end(), v.data(), v.data() + v.size()); });
  CHECK(a == b);
  CHECK_FALSE(back.qformer.config().with_text);
  auto o1 = llm.w;
  auto o2 = back.llm.w;
  std::vector<float> c, d;
  for_each_opt_parameter(oc, o1, [&](const std::string&, auto& v) { c.insert(c.end(), v.data(), v.data() + v.size()); });
  for_each_opt_parameter(back.llm.config(), o2, [&](const std::string&, auto& v) { d.insert(d.end(), v.data(), v.data() + v.size()); });
  CHECK(c == d);
  CHECK(back.llm.config().eos_token_id == oc.eos_token_id);
  expect_round_trip(io::load_opt_tokenizer(out), demo_corpus());

#ifdef BLIP2_CAPTION_EXE
  // caption runs on it (the text is noise: the weights are a pattern, not trained)
  temp_dir run;
  const auto r = blip2::testing::run_program(
      BLIP2_CAPTION_EXE, run,
      {"--model", out.string(), "--inputs", (fixture / "inputs.safetensors").string(), "--beams", "2",
       "--max-new-tokens", "5", "--output", (run / "out.json").string()});
  INFO(r.cmd, "\n", r.err);
  REQUIRE(r.status == 0);
  const auto got = read_json(run / "out.json");
  CHECK(got.size() == 3);  // the three images of inputs.safetensors
#endif
}

TEST_CASE("save_blip2_opt: caption on the saved fixture reproduces the fixture's generations") {
#ifndef BLIP2_CAPTION_EXE
  MESSAGE("skipped: the examples (caption) are not built");
#else
  const auto model = load_blip2_opt<float>(fixture);
  const auto vit = load_vision_model<float>(fixture);
  temp_dir dir;
  const auto out = dir / "saved";
  save_blip2_opt(out, vit, model, io::read_bpe_tokenizer_files(fixture));
  const auto g = read_json(fixture / "generation.json");
  auto reference = [&](const std::string& name) {
    for (const auto& r : g["runs"])
      if (r["name"] == name) return r["results"];
    FAIL("no run ", name, " in generation.json");
    return nlohmann::json();
  };
  auto run = [&](std::vector<std::string> args) {
    temp_dir d;
    args.insert(args.begin(), {"--model", out.string()});
    args.insert(args.end(), {"--output", (d / "out.json").string()});
    const auto r = blip2::testing::run_program(BLIP2_CAPTION_EXE, d, args);
    INFO(r.cmd, "\n", r.err);
    REQUIRE(r.status == 0);
    return read_json(d / "out.json");
  };
  const auto greedy = run({"--inputs", (fixture / "inputs.safetensors").string(), "--beams", "1"});
  const auto want = reference("greedy");
  REQUIRE(greedy.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(greedy[i]["ids"] == want[i]["ids"]);
#ifdef BLIP2_HAS_IMAGE
  // from the PNG: the saved vision_model gives the image embeddings (image.png is image 0 of the batch)
  const auto beam = run({"--images", (fixture / "image.png").string()});
  REQUIRE(beam.size() == 1);
  CHECK(beam[0]["ids"] == reference("caption")[0]["ids"]);
#endif
#endif
}

TEST_CASE("save_blip2_opt: an existing target, a bad pairing and a failure leave the disk as it was") {
  const auto model = load_blip2_opt<float>(fixture);
  const auto vit = load_vision_model<float>(fixture);
  const auto tokenizer = io::read_bpe_tokenizer_files(fixture);
  temp_dir dir;
  const auto out = dir / "saved";
  save_blip2_opt(out, vit, model, tokenizer);
  const std::string before = read_file(out / "model.safetensors");
  // without overwrite: refused, nothing touched
  CHECK(has(message_of<value_error>([&] { save_blip2_opt(out, vit, model, tokenizer); }), "pass overwrite = true"));
  CHECK(read_file(out / "model.safetensors") == before);
  // with overwrite: replaced by the new contents (another vocabulary file shows it), nothing left beside it
  auto other = tokenizer;
  other.tokenizer_config_json = io::trained_byte_bpe::tokenizer_config_json();
  save_blip2_opt(out, vit, model, other, {.overwrite = true});
  CHECK(read_file(out / "tokenizer_config.json") == other.tokenizer_config_json);
  CHECK(read_file(out / "model.safetensors") == before);
  CHECK(leftovers(out).empty());
  // "dir/" names the same directory
  save_blip2_opt(fs::path(out.string() + "/"), vit, model, tokenizer, {.overwrite = true});
  CHECK(read_file(out / "tokenizer_config.json") == read_file(fixture / "tokenizer_config.json"));
  // a file in the way is never replaced
  std::ofstream(dir / "file") << "x";
  CHECK(has(message_of<value_error>([&] { save_blip2_opt(dir / "file", vit, model, tokenizer, {.overwrite = true}); }),
            "not a directory"));
  CHECK(read_file(dir / "file") == "x");
  // a tokenizer with more ids than the embedding has rows: refused after writing into the temporary
  // directory, which is removed; the existing target is untouched
  const auto big = io::train_byte_bpe(demo_corpus(), {.vocab_size = 400}).files();  // 400 > 336 rows
  CHECK(has(message_of<value_error>([&] { save_blip2_opt(out, vit, model, big, {.overwrite = true}); }),
            "do not belong together"));
  CHECK(read_file(out / "tokenizer_config.json") == read_file(fixture / "tokenizer_config.json"));
  CHECK(leftovers(out).empty());
  const auto fresh = dir / "fresh";
  CHECK(has(message_of<value_error>([&] { save_blip2_opt(fresh, vit, model, big); }), "do not belong together"));
  CHECK_FALSE(fs::exists(fresh));
  CHECK(leftovers(fresh).empty());
  // tokenizer files that do not load: format_error, nothing written
  auto broken = tokenizer;
  broken.merges_txt = "#version: 0.2\nq zz\n";
  CHECK(has(message_of<format_error>([&] { save_blip2_opt(fresh, vit, model, broken); }), "not in the vocabulary"));
  CHECK_FALSE(fs::exists(fresh));
  // a vision model of another width than the Q-Former reads
  vision_config vc = vit.config();
  vc.hidden_size = 16, vc.num_attention_heads = 2;
  const vision_model<float> narrow(vc);
  CHECK(has(message_of<value_error>([&] { save_blip2_opt(fresh, narrow, model, tokenizer); }), "cross-attends to 32-wide"));
  CHECK_FALSE(fs::exists(fresh));
}

TEST_CASE("save_opt_lm / load_opt_lm: an OPTForCausalLM directory round-trips, tied and untied") {
  const auto bpe = io::train_byte_bpe(demo_corpus(), {.vocab_size = 300});
  for (const bool tied : {true, false}) {
    CAPTURE(tied);
    opt_config oc;
    oc.vocab_size = 304, oc.hidden_size = 8, oc.num_hidden_layers = 2, oc.num_attention_heads = 2, oc.ffn_dim = 12;
    oc.max_position_embeddings = 20, oc.word_embed_proj_dim = tied ? 8 : 6, oc.do_layer_norm_before = tied;
    oc.tie_word_embeddings = tied;
    opt_model<float> llm(oc);
    fill_pattern(llm.parameters());
    temp_dir dir;
    save_opt_lm(dir / "lm", llm, bpe.files());
    const auto f = safetensors_file::open(dir / "lm" / "model.safetensors");
    CHECK(f.contains("model.decoder.embed_tokens.weight"));
    CHECK(f.contains("lm_head.weight") == !tied);
    CHECK(f.contains("model.decoder.project_in.weight") == !tied);
    for (const auto& n : f.names()) CHECK(n.rfind("language_model.", 0) != 0);
    auto cfg = read_json(dir / "lm" / "config.json");
    CHECK(cfg["architectures"] == nlohmann::json::array({"OPTForCausalLM"}));
    CHECK(cfg["model_type"] == "opt");
    const auto back = load_opt_lm<float>(dir / "lm");
    const auto& bc = back.config();
    CHECK(bc.vocab_size == oc.vocab_size);
    CHECK(bc.word_embed_proj_dim == oc.word_embed_proj_dim);
    CHECK(bc.do_layer_norm_before == oc.do_layer_norm_before);
    CHECK(bc.tie_word_embeddings == tied);
    auto w1 = llm.w;
    auto w2 = back.w;
    std::vector<float> a, b;
    for_each_opt_parameter(oc, w1, [&](const std::string&, auto& v) { a.insert(a.end(), v.data(), v.data() + v.size()); }, "");
    for_each_opt_parameter(bc, w2, [&](const std::string&, auto& v) { b.insert(b.end(), v.data(), v.data() + v.size()); }, "");
    CHECK(a.size() == static_cast<std::size_t>(opt_parameter_count(oc)));
    CHECK(a == b);
    expect_round_trip(io::load_opt_tokenizer(dir / "lm"), demo_corpus());
  }
  // an eps that OPTConfig cannot carry is refused
  opt_config oc;
  oc.vocab_size = 304, oc.hidden_size = 8, oc.num_hidden_layers = 1, oc.num_attention_heads = 2, oc.ffn_dim = 12;
  oc.max_position_embeddings = 20, oc.word_embed_proj_dim = 8, oc.layer_norm_eps = 1e-6;
  const opt_model<float> odd(oc);
  temp_dir dir;
  CHECK(has(message_of<value_error>([&] { save_opt_lm(dir / "lm", odd, bpe.files()); }), "layer_norm_eps"));
  CHECK_FALSE(fs::exists(dir / "lm"));
}
