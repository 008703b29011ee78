// retrieve_cli: the examples/retrieve program, and qformer_features --images/--texts, run as a user would.
//
// The fixture tests/fixtures/retrieval_tiny (make_retrieval_fixtures.py) holds a tiny ViT + Q-Former in one
// checkpoint, a vocabulary, six PNGs, eight captions, their ground truth, and what PyTorch computes for them
// in float64: every ITC score and the ITM class-1 logit of EVERY (image, text) pair. From those matrices the
// test derives LAVIS's rankings (top k by ITC, re-sorted by ITM + ITC) and compares them with the program's
// JSON, candidate by candidate; the scores within a float32 tolerance; R@1/5/10 with the library's
// retrieval_recall / rerank_recall applied to PyTorch's matrices. The fixture script chose its seed so that
// every ranking is decided by a margin of at least 2e-4 (far above float32's error), so comparing orders
// exactly is sound. Then the bad inputs: exit status 1 (2 for usage) and a message naming what is wrong.
//
// qformer_features --images/--texts: its outputs equal those of the --inputs path run on the image_embeds
// and token ids that the library computes itself (load_image, blip2_eval_transform, vision_forward,
// lavis_caption, bert_tokenizer), and PyTorch's within tolerance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/eval/retrieval.hpp"
#include "blip2/io/bert_tokenizer.hpp"
#include "blip2/io/image.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "harness/expect_error.hpp"
#include "harness/run_program.hpp"

using namespace blip2;
using namespace blip2::testing;
namespace fs = std::filesystem;

namespace {

const fs::path fixtures = BLIP2_FIXTURE_DIR;
const fs::path tiny = fixtures / "retrieval_tiny";
const std::string retrieve_exe = BLIP2_RETRIEVE_EXE;
const std::string features_exe = BLIP2_QFORMER_FEATURES_EXE;

// float32 against PyTorch's float64 on O(1) scores (cosines in [-1, 1], ITM logits below 1 here): we measure
// 3e-7; 1e-5 still catches any wrong term while leaving room for another BLAS's summation order.
constexpr double score_tol = 1e-5;

struct torch_scores {
  index_t Ni = 0, Nt = 0;
  std::vector<double> itc, itm;  // (Ni, Nt)
  double at(const std::vector<double>& m, index_t i, index_t j) const { return m[static_cast<std::size_t>(i * Nt + j)]; }
};

torch_scores load_torch() {
  const auto f = safetensors_file::open(tiny / "expected.safetensors");
  torch_scores s;
  const auto itc = f.load_dynamic<double>("itc"), itm = f.load_dynamic<double>("itm");
  s.Ni = itc.shape[0];
  s.Nt = itc.shape[1];
  s.itc = itc.data;
  s.itm = itm.data;
  return s;
}

// LAVIS's ranking of one query: the k best candidates by ITC (ties: lower index), sorted by ITM + ITC.
std::vector<index_t> expected_ranking(const torch_scores& s, index_t query, bool t2i, index_t k) {
  const index_t n = t2i ? s.Ni : s.Nt;
  auto itc = [&](index_t c) { return t2i ? s.at(s.itc, c, query) : s.at(s.itc, query, c); };
  auto both = [&](index_t c) { return itc(c) + (t2i ? s.at(s.itm, c, query) : s.at(s.itm, query, c)); };
  std::vector<index_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), index_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) { return itc(a) > itc(b); });
  idx.resize(static_cast<std::size_t>(std::min(k, n)));
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) { return both(a) > both(b); });
  return idx;
}

std::vector<std::string> base_args(const fs::path& images = tiny / "images", const fs::path& captions = tiny / "captions.txt") {
  return {"--model", tiny.string(), "--images", images.string(), "--captions", captions.string()};
}

// A folder with copies of the fixture's images (plus `extra` files: name -> content).
fs::path image_folder(const temp_dir& dir, const std::string& name) {
  const fs::path f = dir / name;
  fs::create_directories(f);
  for (const auto& e : fs::directory_iterator(tiny / "images")) fs::copy_file(e.path(), f / e.path().filename());
  return f;
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("retrieve: ranked lists and scores equal PyTorch's (LAVIS compute_sim_matrix), both ways, k 3 and 128") {
  const torch_scores s = load_torch();
  REQUIRE(s.Ni == 6);
  REQUIRE(s.Nt == 8);
  for (const auto& backend : built_backends())
    for (const index_t k : {index_t{3}, index_t{128}}) {
      CAPTURE(backend);
      CAPTURE(k);
      temp_dir dir;
      auto args = base_args();
      args.insert(args.end(), {"--k", std::to_string(k), "--backend", backend, "--batch", "4", "--output",
                               (dir / "out.json").string()});
      const auto r = run_program(retrieve_exe, dir, args);
      INFO(r.cmd, "\nstderr: ", r.err);
      REQUIRE(r.status == 0);
      const auto j = nlohmann::json::parse(read_text(dir / "out.json"));
      REQUIRE(j["images"].size() == 6);
      CHECK(j["images"][0] == "img0.png");
      CHECK(j["images"][5] == "img5.png");
      REQUIRE(j["captions"].size() == 8);
      CHECK(j["captions"][1] == "Two red balls!");
      CHECK(j["max_length"] == 16);  // min(35, max_position_embeddings = 16)
      for (const bool t2i : {true, false}) {
        const auto& lists = j[t2i ? "text_to_image" : "image_to_text"];
        REQUIRE(static_cast<index_t>(lists.size()) == (t2i ? s.Nt : s.Ni));
        for (index_t q = 0; q < static_cast<index_t>(lists.size()); ++q) {
          CAPTURE(t2i);
          CAPTURE(q);
          const auto want = expected_ranking(s, q, t2i, k);
          const auto& got = lists[static_cast<std::size_t>(q)];
          REQUIRE(got.size() == want.size());
          for (std::size_t x = 0; x < want.size(); ++x) {
            const index_t c = got[x][t2i ? "image" : "text"].get<index_t>();
            CHECK(c == want[x]);
            const index_t i = t2i ? c : q, t = t2i ? q : c;
            CHECK(std::abs(got[x]["itc"].get<double>() - s.at(s.itc, i, t)) <= score_tol);
            CHECK(std::abs(got[x]["itm"].get<double>() - s.at(s.itm, i, t)) <= score_tol);
            CHECK(std::abs(got[x]["score"].get<double>() - s.at(s.itc, i, t) - s.at(s.itm, i, t)) <= 2 * score_tol);
          }
        }
      }
    }
}

TEST_CASE("retrieve: R@1/5/10 with a ground truth equal the library's metrics on PyTorch's matrices") {
  const torch_scores s = load_torch();
  const auto names = [] {
    std::vector<std::string> out;
    std::ifstream in(tiny / "ground_truth.txt");
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }();
  std::vector<index_t> t2i;
  for (const auto& n : names) t2i.push_back(std::stoll(n.substr(3, 1)));  // "img<i>.png"
  const auto gt = retrieval_ground_truth::from_text_to_image(t2i, s.Ni);
  const tensor_view<const double, 2> sim(s.itc.data(), {s.Ni, s.Nt});
  for (const index_t k : {index_t{2}, index_t{128}}) {
    CAPTURE(k);
    const auto itc_only = retrieval_recall(sim, gt);
    const rerank_plan plan = plan_rerank(sim, k);
    std::vector<double> rescored;
    for (const auto& [i, j] : plan.pairs) rescored.push_back(s.at(s.itc, i, j) + s.at(s.itm, i, j));
    const auto reranked = rerank_recall(sim, plan, std::span<const double>(rescored), gt);

    temp_dir dir;
    auto args = base_args();
    args.insert(args.end(), {"--k", std::to_string(k), "--ground-truth", (tiny / "ground_truth.txt").string(),
                             "--output", (dir / "out.json").string(), "--show", "0"});
    const auto r = run_program(retrieve_exe, dir, args);
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    const auto j = nlohmann::json::parse(read_text(dir / "out.json"));
    auto check_dir = [](const nlohmann::json& got, const recall_at_k& want) {
      // percentages of 6 or 8 queries, printed from the same counts: equal up to double rounding
      CHECK(std::abs(got["r1"].get<double>() - 100 * want.r1) < 1e-9);
      CHECK(std::abs(got["r5"].get<double>() - 100 * want.r5) < 1e-9);
      CHECK(std::abs(got["r10"].get<double>() - 100 * want.r10) < 1e-9);
      CHECK(std::abs(got["mean_rank"].get<double>() - want.mean_rank) < 1e-9);
    };
    check_dir(j["recall"]["itc"]["text_to_image"], itc_only.t2i);
    check_dir(j["recall"]["itc"]["image_to_text"], itc_only.i2t);
    check_dir(j["recall"]["itc_itm"]["text_to_image"], reranked.t2i);
    check_dir(j["recall"]["itc_itm"]["image_to_text"], reranked.i2t);
    // stdout carries the same two blocks, as format_retrieval writes them
    const std::string out = read_text(dir / "stdout.txt");
    CHECK(has(out, format_retrieval(itc_only, "ITC    ")));
    CHECK(has(out, format_retrieval(reranked, "ITC+ITM")));
  }
}

TEST_CASE("retrieve: stdout lists each query's best candidates") {
  temp_dir dir;
  auto args = base_args();
  args.insert(args.end(), {"--k", "3", "--show", "2"});
  const auto r = run_program(retrieve_exe, dir, args);
  INFO(r.cmd, "\nstderr: ", r.err);
  REQUIRE(r.status == 0);
  const std::string out = read_text(dir / "stdout.txt");
  CHECK(has(out, "text->image"));
  CHECK(has(out, "image->text"));
  CHECK(has(out, "  1 \"Two red balls!\":  img"));
  CHECK(has(out, "  img5.png:  "));
  CHECK(has(r.err, "images"));  // progress on stderr
}

TEST_CASE("retrieve: other files in the folder are skipped with a warning; JPEG and other sizes are read") {
  temp_dir dir;
  const fs::path folder = image_folder(dir, "imgs");
  write_file(folder / "notes.txt", "not an image\n");
  write_file(folder / ".hidden.png", "ignored");
  fs::create_directories(folder / "sub");
  fs::copy_file(fixtures / "images" / "in_rgb_64x64.jpg", folder / "z_photo.JPG");
  fs::copy_file(fixtures / "images" / "in_rgb_37x23.png", folder / "y_wide.png");
  auto args = base_args(folder);
  args.insert(args.end(), {"--output", (dir / "out.json").string(), "--k", "4"});
  const auto r = run_program(retrieve_exe, dir, args);
  INFO(r.cmd, "\nstderr: ", r.err);
  REQUIRE(r.status == 0);
  CHECK(has(r.err, "warning: skipping"));
  CHECK(has(r.err, "notes.txt"));
  const auto j = nlohmann::json::parse(read_text(dir / "out.json"));
  REQUIRE(j["images"].size() == 8);
  CHECK(j["images"][6] == "y_wide.png");
  CHECK(j["images"][7] == "z_photo.JPG");
  for (const auto& list : j["image_to_text"]) CHECK(list.size() == 4);
  for (const auto& list : j["text_to_image"])
    for (const auto& c : list) CHECK(std::isfinite(c["score"].get<double>()));
}

TEST_CASE("retrieve: bad input gives a clear error") {
  temp_dir dir;
  auto expect = [&](std::vector<std::string> args, int status, const std::string& message) {
    const auto r = run_program(retrieve_exe, dir, args);
    INFO(r.cmd, "\nstderr: ", r.err);
    CHECK(r.status == status);
    CHECK(has(r.err, message));
  };
  SUBCASE("an empty folder") {
    fs::create_directories(dir / "empty");
    expect(base_args(dir / "empty"), 1, "no .png, .jpg or .jpeg file in the folder");
  }
  SUBCASE("a folder that does not exist") { expect(base_args(dir / "nowhere"), 1, "not a folder"); }
  SUBCASE("a .png that is not an image") {
    const fs::path folder = image_folder(dir, "imgs");
    write_file(folder / "img2b.png", "this is text, not a PNG");
    expect(base_args(folder), 1, "img2b.png");
  }
  SUBCASE("an empty caption line") {
    write_file(dir / "caps.txt", "a dog\n\na cat\n");
    expect(base_args(tiny / "images", dir / "caps.txt"), 1, "line 2 is empty");
  }
  SUBCASE("a caption line of spaces") {
    write_file(dir / "caps.txt", "a dog\r\n   \r\n");
    expect(base_args(tiny / "images", dir / "caps.txt"), 1, "line 2 is empty");
  }
  SUBCASE("an empty captions file") {
    write_file(dir / "caps.txt", "");
    expect(base_args(tiny / "images", dir / "caps.txt"), 1, "the file is empty");
  }
  SUBCASE("a missing captions file") { expect(base_args(tiny / "images", dir / "none.txt"), 1, "cannot open"); }
  SUBCASE("a missing model") {
    auto args = base_args();
    args[1] = (dir / "no_model").string();
    expect(args, 1, "no_model");
  }
  SUBCASE("a model folder without config.json") {
    fs::create_directories(dir / "m");
    auto args = base_args();
    args[1] = (dir / "m").string();
    expect(args, 1, "config.json");
  }
  SUBCASE("no vocabulary") {
    fs::create_directories(dir / "m");
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(tiny / f, dir / "m" / f);
    auto args = base_args();
    args[1] = (dir / "m").string();
    expect(args, 1, "no vocabulary");
    args.insert(args.end(), {"--vocab", (tiny / "vocab.txt").string(), "--show", "0"});  // --vocab fixes it
    expect(args, 0, "");
  }
  SUBCASE("a ground truth naming an unknown image") {
    write_file(dir / "gt.txt", "img0.png\nimg1.png\nimg2.png\nimg3.png\nimg0.png\nimg4.png\ncat.png\nimg3.png\n");
    auto args = base_args();
    args.insert(args.end(), {"--ground-truth", (dir / "gt.txt").string()});
    expect(args, 1, "line 7 names 'cat.png'");
  }
  SUBCASE("a ground truth with too few lines") {
    write_file(dir / "gt.txt", "img0.png\n");
    auto args = base_args();
    args.insert(args.end(), {"--ground-truth", (dir / "gt.txt").string()});
    expect(args, 1, "1 lines for 8 captions");
  }
  SUBCASE("a ground truth leaving an image without caption") {
    write_file(dir / "gt.txt", "img0.png\nimg1.png\nimg2.png\nimg3.png\nimg0.png\nimg4.png\nimg4.png\nimg3.png\n");
    auto args = base_args();
    args.insert(args.end(), {"--ground-truth", (dir / "gt.txt").string()});
    expect(args, 1, "'img5.png' has no caption");
  }
  SUBCASE("--max-length beyond the model's positions") {
    auto args = base_args();
    args.insert(args.end(), {"--max-length", "17"});
    expect(args, 1, "max_position_embeddings = 16");
  }
  SUBCASE("usage errors") {
    expect({"--model", tiny.string(), "--images", (tiny / "images").string()}, 2, "missing --captions");
    auto args = base_args();
    args.insert(args.end(), {"--k", "0"});
    expect(args, 2, "--k '0'");
    expect({"--bogus"}, 2, "unknown argument");
  }
}

// ---- qformer_features --images / --texts ----

TEST_CASE("qformer_features --images/--texts equals --inputs on the library's own image_embeds and ids") {
  const std::vector<std::string> image_files = {"img3.png", "img0.png", "img5.png"};
  const std::vector<std::string> texts = {"A man with a blue ball", "A dog running on the grass.",
                                          "the dog and the cat and the man and the ball on the grass in the box "
                                          "with two balls"};
  // the inputs, computed here with the library's calls
  reference_backend ref;
  const auto vit = load_vision_model<float>(tiny);
  const index_t S = vit.config().image_size, B = 3;
  std::vector<float> pixels;
  std::vector<std::string> paths;
  for (const auto& f : image_files) {
    paths.push_back((tiny / "images" / f).string());
    const auto chw = io::blip2_eval_transform(io::load_image(tiny / "images" / f), static_cast<int>(S));
    pixels.insert(pixels.end(), chw.data(), chw.data() + chw.size());
  }
  const auto embeds = vision_forward(ref, vit, tensor_view<const float, 4>(pixels.data(), {B, 3, S, S}));
  const auto tok = io::bert_tokenizer::from_vocab_file(tiny / "vocab.txt");
  std::vector<std::string> pre;
  for (const auto& t : texts) pre.push_back(io::lavis_caption(t));
  const auto tb = tok.encode_batch(pre, 16);
  CHECK(tb.length == 16);  // the long caption is truncated at the default max length
  temp_dir dir;
  const std::vector<std::int64_t> shape = {B, static_cast<std::int64_t>(tb.length)};
  save_safetensors(dir / "in.safetensors",
                   {safetensors_entry::of("image_embeds", embeds.view()),
                    safetensors_entry("input_ids", safetensors_dtype::i64, shape, std::as_bytes(std::span(tb.input_ids))),
                    safetensors_entry("attention_mask", safetensors_dtype::i64, shape,
                                      std::as_bytes(std::span(tb.attention_mask)))});
  // the token ids are PyTorch's (the fixture script's tokenizer) for the same captions
  const auto want = safetensors_file::open(tiny / "expected.safetensors");
  const auto want_ids = want.load_dynamic<std::int64_t>("input_ids");
  const index_t rows[] = {3, 0, 6};  // the captions' lines in captions.txt
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < 16; ++t)
      CHECK(tb.input_ids[static_cast<std::size_t>(b * 16 + t)] == want_ids.data[static_cast<std::size_t>(rows[b] * 16 + t)]);

  for (const auto& backend : built_backends()) {
    CAPTURE(backend);
    std::vector<std::string> a = {"--model", tiny.string(), "--inputs", (dir / "in.safetensors").string(), "--output",
                                  (dir / "a.safetensors").string(), "--backend", backend};
    auto r = run_program(features_exe, dir, a);
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    std::vector<std::string> b = {"--model", tiny.string(), "--images"};
    b.insert(b.end(), paths.begin(), paths.end());
    b.push_back("--texts");
    b.insert(b.end(), texts.begin(), texts.end());
    b.insert(b.end(), {"--output", (dir / "b.safetensors").string(), "--backend", backend});
    r = run_program(features_exe, dir, b);
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    const auto fa = safetensors_file::open(dir / "a.safetensors"), fb = safetensors_file::open(dir / "b.safetensors");
    REQUIRE(fa.names() == fb.names());
    CHECK(fa.size() == 5);
    for (const auto& name : fa.names()) {
      CAPTURE(name);
      // the same inputs through the same calls: identical bits. The only difference is where the image
      // embeddings were computed (this process on the reference backend, the program on `backend`): on
      // oneDNN they may differ in the last bits, so there the bound is float32's relative 1e-5.
      const auto x = fa.load_dynamic<double>(name), y = fb.load_dynamic<double>(name);
      REQUIRE(x.shape == y.shape);
      double diff = 0;
      for (std::size_t i = 0; i < x.data.size(); ++i) diff = std::max(diff, std::abs(x.data[i] - y.data[i]));
      if (backend == "reference")
        CHECK(diff == 0);
      else
        CHECK(diff <= 1e-5);
    }
    // and PyTorch's ITC scores for these images and captions
    const auto itc = fb.load_dynamic<double>("itc_scores");
    const auto want_itc = want.load_dynamic<double>("itc");
    const index_t imgs[] = {3, 0, 5};
    for (index_t i = 0; i < B; ++i)
      for (index_t j = 0; j < B; ++j)
        CHECK(std::abs(itc.data[static_cast<std::size_t>(i * B + j)] -
                       want_itc.data[static_cast<std::size_t>(imgs[i] * 8 + rows[j])]) <= score_tol);
  }
}

TEST_CASE("qformer_features --images/--texts: unequal counts, one side only, and errors") {
  temp_dir dir;
  const std::string img = (tiny / "images" / "img1.png").string();
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--model", tiny.string()});
    args.insert(args.end(), {"--output", (dir / "o.safetensors").string()});
    return run_program(features_exe, dir, args);
  };
  SUBCASE("2 images, 3 texts: everything but itm_logits, with a note") {
    const auto r = run({"--images", img, img, "--texts", "a dog", "a cat", "two balls"});
    INFO(r.cmd, "\nstderr: ", r.err);
    REQUIRE(r.status == 0);
    CHECK(has(read_text(dir / "stdout.txt"), "itm_logits (image b with text b) needs equal counts"));
    const auto f = safetensors_file::open(dir / "o.safetensors");
    CHECK(f.size() == 4);
    CHECK(!f.contains("itm_logits"));
    CHECK(f.info("itc_scores").shape == std::vector<std::int64_t>{2, 3});
  }
  SUBCASE("texts only: text_feat") {
    const auto r = run({"--texts", "a dog", "a cat"});
    REQUIRE(r.status == 0);
    const auto f = safetensors_file::open(dir / "o.safetensors");
    CHECK(f.names() == std::vector<std::string>{"text_feat"});
  }
  SUBCASE("images only: query_output and image_feats") {
    const auto r = run({"--images", img});
    REQUIRE(r.status == 0);
    const auto f = safetensors_file::open(dir / "o.safetensors");
    CHECK(f.size() == 2);
    CHECK(f.contains("query_output"));
    CHECK(f.contains("image_feats"));
  }
  SUBCASE("a missing vocabulary") {
    const auto r = run({"--texts", "a dog", "--vocab", (dir / "none.txt").string()});
    CHECK(r.status == 1);
    CHECK(has(r.err, "no vocabulary"));
  }
  SUBCASE("a model without vocab.txt") {
    const auto r = run_program(features_exe, dir, {"--model", (fixtures / "qformer_padded").string(), "--texts", "a",
                                                   "--output", (dir / "o.safetensors").string()});
    CHECK(r.status == 1);
    CHECK(has(r.err, "vocab.txt' does not exist"));
  }
  SUBCASE("a file that is not an image") {
    write_file(dir / "x.png", "text");
    const auto r = run({"--images", (dir / "x.png").string()});
    CHECK(r.status == 1);
    CHECK(has(r.err, "x.png"));
  }
  SUBCASE("--inputs with --texts") {
    const auto r = run({"--inputs", "in.safetensors", "--texts", "a"});
    CHECK(r.status == 2);
    CHECK(has(r.err, "not both"));
  }
  SUBCASE("--texts without a value") {
    const auto r = run({"--texts"});
    CHECK(r.status == 2);
    CHECK(has(r.err, "--texts needs at least one value"));
  }
}
