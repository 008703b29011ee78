// caption_vqa_cli: the caption and vqa programs on a checkpoint directory written by the fixture script
// (tests/fixtures/stage2_opt: tiny ViT, Q-Former, OPT and BPE vocabulary): from precomputed image
// embeddings and from the PNG, on every built backend, against generation.json (the float64 reference of
// Hugging Face's generation over the same model): the ids of --output are identical and the scores within
// 1e-5 relative (float logits). Then the usage errors (exit 2) and the failures (exit 1 with a message
// that names the problem, no output file): an empty image list, a prompt that does not fit the decoder's
// positions, a vocabulary that does not match the embedding, a text model that is not OPT.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/run_program.hpp"

using namespace blip2::testing;
namespace fs = std::filesystem;

namespace {

const fs::path fixture = fs::path(BLIP2_FIXTURE_DIR) / "stage2_opt";

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE_MESSAGE(f.good(), p.string());
  return nlohmann::json::parse(f);
}

const nlohmann::json& reference_run(const nlohmann::json& g, const std::string& name) {
  for (const auto& r : g["runs"])
    if (r["name"] == name) return r;
  FAIL("no run ", name, " in generation.json");
  throw;
}

// Runs exe with args + --output, checks exit 0 and that the output's ids equal the reference run's
// results (first `count` of them; all when 0).
void expect_run(const char* exe, std::vector<std::string> args, const std::string& run_name, std::size_t count = 0) {
  const auto g = read_json(fixture / "generation.json");
  const auto& want = reference_run(g, run_name)["results"];
  temp_dir dir;
  args.push_back("--output");
  args.push_back((dir / "out.json").string());
  const auto r = run_program(exe, dir, args);
  INFO(r.cmd, "\n", r.err);
  REQUIRE(r.status == 0);
  const auto got = read_json(dir / "out.json");
  const std::size_t n = count ? count : want.size();
  REQUIRE(got.size() == n);
  // stdout: one line per text, in order, equal to the JSON's texts
  std::ifstream lines(dir / "stdout.txt");
  for (std::size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(got[i]["ids"] == want[i]["ids"]);
    const double ws = want[i]["score"];
    CHECK(std::abs(got[i]["score"].get<double>() - ws) <= 1e-5 * std::max(1.0, std::abs(ws)));
    std::string line;
    REQUIRE(std::getline(lines, line));
    CHECK(line == got[i]["text"].get<std::string>());
    CHECK(got[i].contains("image"));
    CHECK(got[i].contains("prompt"));
  }
}

// A failing run: the status, a message containing `says`, and no output file.
void expect_failure(const char* exe, std::vector<std::string> args, int status, const std::string& says) {
  temp_dir dir;
  args.push_back("--output");
  args.push_back((dir / "out.json").string());
  const auto r = run_program(exe, dir, args);
  INFO(r.cmd, "\n", r.err);
  CHECK(r.status == status);
  CHECK(r.err.find(says) != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out.json"));
}

// A copy of the fixture directory whose file `name` is rewritten by edit(text).
template <class Edit>
fs::path edited_copy(const temp_dir& dir, const std::string& name, Edit&& edit) {
  const auto copy = dir / "model";
  fs::copy(fixture, copy, fs::copy_options::recursive);
  std::ifstream in(copy / name);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  std::ofstream(copy / name, std::ios::trunc) << edit(text);
  return copy;
}

}  // namespace

TEST_CASE("caption and vqa reproduce the reference's ids, from embeddings and from the PNG, on every backend") {
  const std::string model = fixture.string(), inputs = (fixture / "inputs.safetensors").string();
  for (const auto& be : built_backends()) {
    CAPTURE(be);
    // LAVIS's caption settings are the defaults: prompt "a photo of", 5 beams, 30 new tokens, length penalty 1
    expect_run(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--backend", be}, "caption");
    expect_run(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--backend", be, "--beams", "1"}, "greedy");
    expect_run(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--backend", be, "--beams", "1", "--prompt", ""},
               "greedy_no_prompt");
    expect_run(BLIP2_CAPTION_EXE,
               {"--model", model, "--inputs", inputs, "--backend", be, "--beams", "2", "--repetition-penalty", "1.5"},
               "beams2_rp");
    expect_run(BLIP2_VQA_EXE, {"--model", model, "--inputs", inputs, "--backend", be, "--question", "what colour is it?"},
               "vqa");
  }
#ifdef BLIP2_HAS_IMAGE
  // image.png is image 0 of the batch: the ViT inside the program gives its embeddings
  expect_run(BLIP2_CAPTION_EXE, {"--model", model, "--images", (fixture / "image.png").string()}, "caption", 1);
#endif
}

TEST_CASE("caption and vqa: --num-captions, sampling and --help") {
  const std::string model = fixture.string(), inputs = (fixture / "inputs.safetensors").string();
  temp_dir dir;
  const auto out = (dir / "out.json").string();
  auto r = run_program(BLIP2_CAPTION_EXE, dir, {"--model", model, "--inputs", inputs, "--num-captions", "3", "--output", out});
  REQUIRE(r.status == 0);
  const auto three = read_json(out);
  CHECK(three.size() == 9);  // 3 images x 3 beams' hypotheses, the best first
  CHECK(three[0]["ids"] == reference_run(read_json(fixture / "generation.json"), "caption")["results"][0]["ids"]);
  for (int k = 0; k < 2; ++k) CHECK(three[k]["score"].get<double>() >= three[k + 1]["score"].get<double>());
  // sampling: seeded, so the same seed gives the same texts and another seed (almost surely) others
  auto sample = [&](const std::string& seed) {
    auto s = run_program(BLIP2_CAPTION_EXE, dir, {"--model", model, "--inputs", inputs, "--sample", "--top-p", "0.9",
                                                  "--temperature", "1.5", "--seed", seed, "--output", out});
    REQUIRE(s.status == 0);
    return read_json(out);
  };
  const auto a = sample("7"), b = sample("7"), c = sample("8");
  CHECK(a == b);
  CHECK(a != c);
  r = run_program(BLIP2_VQA_EXE, dir, {"--help"});
  CHECK(r.status == 0);
  CHECK(read_text(dir / "stdout.txt").find("--question TEXT") != std::string::npos);
}

TEST_CASE("caption and vqa: bad input is a clear error") {
  const std::string model = fixture.string(), inputs = (fixture / "inputs.safetensors").string();
  // usage errors: exit 2
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--images"}, 2, "--images needs at least one value");
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model}, 2, "missing --images");
  expect_failure(BLIP2_VQA_EXE, {"--model", model, "--inputs", inputs}, 2, "missing --question");
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--beams", "0"}, 2, "--beams");
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--sample", "--beams", "3"}, 2, "beam-sample");
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--num-captions", "6"}, 2,
                 "num_return_sequences = 6 must be <= num_beams = 5");
  // failures: exit 1, the message names the problem
  // 4 queries + 4 prompt ids + 42 new tokens - 1 (the last is never fed back) > 48 positions
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--max-new-tokens", "42"}, 1,
                 "max_position_embeddings = 48");
  std::string long_prompt;
  for (int k = 0; k < 40; ++k) long_prompt += " photo";
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--inputs", inputs, "--prompt", long_prompt}, 1,
                 "max_position_embeddings = 48");
  temp_dir d1, d2, d3;
  // a vocabulary with more tokens than the embedding's 336 rows
  const auto big_vocab = edited_copy(d1, "vocab.json", [](std::string t) {
    std::string extra;
    for (int k = 0; k < 10; ++k) extra += ", \"extra" + std::to_string(k) + "\": " + std::to_string(330 + k);
    return t.insert(t.rfind('}'), extra);
  });
  expect_failure(BLIP2_CAPTION_EXE, {"--model", big_vocab.string(), "--inputs", inputs}, 1,
                 "the tokenizer has 340 tokens but the decoder's embedding has 336 rows");
  const auto t5 = edited_copy(d2, "config.json", [](std::string t) {
    const auto at = t.find("\"model_type\": \"opt\"");
    REQUIRE(at != std::string::npos);
    return t.replace(at, 19, "\"model_type\": \"t5\"");
  });
  expect_failure(BLIP2_CAPTION_EXE, {"--model", t5.string(), "--inputs", inputs}, 1, "\"t5\"");
  expect_failure(BLIP2_CAPTION_EXE, {"--model", model, "--images", (d3 / "no_such.png").string()}, 1, "no_such.png");
}
