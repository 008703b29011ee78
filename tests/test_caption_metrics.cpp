// test_caption_metrics: BLEU-4 and CIDEr-D as the COCO caption evaluation (pycocoevalcap) computes them,
// on examples worked by hand below and on 20 synthetic-world captions whose numbers
// tests/fixtures/make_caption_metrics_fixtures.py computed from the formulas (standard-library Python,
// checked there against pycocoevalcap's own scorers); and VQA accuracy by exact match, per question type.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "blip2/eval/bleu.hpp"
#include "blip2/eval/caption_ngrams.hpp"
#include "blip2/eval/cider.hpp"
#include "blip2/eval/vqa_accuracy.hpp"

using namespace blip2;

namespace {
// pycocoevalcap's smoothing constants (bleu_scorer.py): p_n = (correct + tiny) / (guess + small).
constexpr double tiny = 1e-15, small = 1e-9;
double p(double correct, double guess) { return (correct + tiny) / (guess + small); }
// BP for corpus lengths c and r, as bleu_scorer.py computes it.
double bp(double c, double r) {
  const double ratio = (c + tiny) / (r + small);
  return ratio < 1 ? std::exp(1 - 1 / ratio) : 1.0;
}
bool near_rel(double got, double want, double rel = 1e-12) {
  return std::fabs(got - want) <= rel * std::max(1.0, std::fabs(want));
}
using strings = std::vector<std::string>;
const std::string ten = "a small red circle left of a large blue square";  // 10 tokens
}  // namespace

// ---------------------------------------------------------------------------------------------------
// Tokens and n-grams
// ---------------------------------------------------------------------------------------------------
TEST_CASE("caption tokens: lowercase, the punctuation PTB + pycocoevalcap drop is dropped") {
  CHECK(coco_caption_tokens("A small red circle, left of a large BLUE square.") ==
        strings{"a", "small", "red", "circle", "left", "of", "a", "large", "blue", "square"});
  CHECK(coco_caption_tokens("  red\tcircle\n") == strings{"red", "circle"});
  CHECK(coco_caption_tokens("a -- b - c ' d ; e ... f!?") == strings{"a", "b", "c", "d", "e", "f"});
  // hyphenated words stay whole (as in PTB); quotes, brackets and a plural possessive's ' go
  CHECK(coco_caption_tokens("(t-shirt) dogs' ``quoted'' [x]{y}") == strings{"t-shirt", "dogs", "quoted", "x", "y"});
  CHECK(coco_caption_tokens("").empty());
  CHECK(coco_caption_tokens(" .,;:!? -- ").empty());
  // the synthetic world's captions are their own tokenization
  CHECK(coco_caption_tokens(ten).size() == 10);
}

TEST_CASE("caption n-grams: every order 1..4 counted, keyed by the words joined with one space") {
  // "a a a b": 4 unigrams (a x3, b), 3 bigrams (a a x2, a b), 2 trigrams, 1 four-gram
  const caption_ngrams ng = count_ngrams("a A a. b");
  CHECK(ng.words == 4);
  CHECK(ng.counts[0].size() == 2);
  CHECK(ng.counts[0].at("a") == 3);
  CHECK(ng.counts[0].at("b") == 1);
  CHECK(ng.counts[1].at("a a") == 2);
  CHECK(ng.counts[1].at("a b") == 1);
  CHECK(ng.counts[2].at("a a a") == 1);
  CHECK(ng.counts[2].at("a a b") == 1);
  CHECK(ng.counts[3].size() == 1);
  CHECK(ng.counts[3].at("a a a b") == 1);
  const caption_ngrams two = count_ngrams("red circle");
  CHECK(two.counts[2].empty());
  CHECK(two.counts[3].empty());
}

// ---------------------------------------------------------------------------------------------------
// BLEU
// ---------------------------------------------------------------------------------------------------
TEST_CASE("BLEU: a candidate identical to its only reference scores 1, less pycocoevalcap's smoothing") {
  // c = r = 10; every n-gram matches: correct = guess = {10, 9, 8, 7}. p_n = (x + 1e-15) / (x + 1e-9),
  // and even BP is not 1: ratio = (10 + 1e-15) / (10 + 1e-9) < 1, so BP = exp(1 - 1/ratio) ~ exp(-1e-10).
  const std::vector<caption_example> corpus{{ten, {ten}}};
  const bleu_result b = bleu_score(corpus);
  CHECK(b.correct == std::array<index_t, 4>{10, 9, 8, 7});
  CHECK(b.guess == std::array<index_t, 4>{10, 9, 8, 7});
  CHECK(b.candidate_length == 10);
  CHECK(b.reference_length == 10);
  const double want = std::pow(p(10, 10) * p(9, 9) * p(8, 8) * p(7, 7), 0.25) * bp(10, 10);
  CHECK(near_rel(b.bleu4(), want, 1e-15));
  CHECK(b.bleu4() < 1.0);
  CHECK(b.bleu4() > 1.0 - 1e-9);
  CHECK(b.brevity_penalty < 1.0);
  CHECK(b.per_image.size() == 1);
  CHECK(b.per_image[0] == b.score);  // one image: the sentence score is the corpus score
}

TEST_CASE("BLEU: a repeated word counts only as often as one reference has it (clipping)") {
  // "red red red red" against "a red circle": red occurs 4 times but the reference has it once:
  // correct_1 = min(4, 1) = 1 of guess_1 = 4; "red red" (3 times) is in no reference. c = 4 >= r = 3: no BP.
  // BLEU-1 = (1 + 1e-15) / (4 + 1e-9) ~ 1/4.
  const bleu_result one = bleu_score(std::vector<caption_example>{{"red red red red", {"a red circle"}}});
  CHECK(one.correct == std::array<index_t, 4>{1, 0, 0, 0});
  CHECK(one.guess == std::array<index_t, 4>{4, 3, 2, 1});
  CHECK(one.brevity_penalty == 1.0);
  CHECK(near_rel(one.score[0], p(1, 4), 1e-15));
  // The clip is the MAX over the references, not the sum: two references with one red each still allow
  // one red; a reference with "red red" allows two reds and the bigram "red red" once.
  const bleu_result two = bleu_score(std::vector<caption_example>{{"red red red red", {"a red circle", "red square"}}});
  CHECK(two.correct == std::array<index_t, 4>{1, 0, 0, 0});
  const bleu_result more = bleu_score(std::vector<caption_example>{{"red red red red", {"a red circle", "red red square"}}});
  CHECK(more.correct == std::array<index_t, 4>{2, 1, 0, 0});
  CHECK(near_rel(more.score[1], std::sqrt(p(2, 4) * p(1, 3)), 1e-15));
}

TEST_CASE("BLEU: a candidate sharing no 4-gram gets BLEU-4 ~ 1e-4 (pycocoevalcap's 1e-15), not 0") {
  // candidate "a red circle and a blue square" (c = 7), reference "a red circle left of a blue square" (r = 8)
  //   unigrams  a a red circle and blue square  -> 6 of 7 match (a twice: the reference has two a's)
  //   bigrams   a-red red-circle circle-and and-a a-blue blue-square  -> 4 of 6
  //   trigrams  a-red-circle red-circle-and circle-and-a and-a-blue a-blue-square  -> 2 of 5
  //   4-grams   a-red-circle-and red-circle-and-a circle-and-a-blue and-a-blue-square  -> 0 of 4
  // BP = exp(1 - 8/7). BLEU-3 = (6/7 4/6 2/5)^(1/3) BP ~ 0.530;
  // BLEU-4 = (6/7 4/6 2/5 (0 + 1e-15)/(4 + 1e-9))^(1/4) BP ~ 7.5e-5.
  const std::vector<caption_example> corpus{{"a red circle and a blue square", {"a red circle left of a blue square"}}};
  const bleu_result b = bleu_score(corpus);
  CHECK(b.correct == std::array<index_t, 4>{6, 4, 2, 0});
  CHECK(b.guess == std::array<index_t, 4>{7, 6, 5, 4});
  CHECK(near_rel(b.brevity_penalty, std::exp(1.0 - 8.0 / 7.0), 1e-9));
  CHECK(near_rel(b.score[2], std::cbrt(6.0 / 7 * 4.0 / 6 * 2.0 / 5) * std::exp(1.0 - 8.0 / 7.0), 1e-9));
  const double b4 = std::pow(p(6, 7) * p(4, 6) * p(2, 5) * p(0, 4), 0.25) * bp(7, 8);
  CHECK(near_rel(b.bleu4(), b4, 1e-14));
  CHECK(b.bleu4() > 7.4e-5);
  CHECK(b.bleu4() < 7.6e-5);
}

TEST_CASE("BLEU: the brevity penalty exp(1 - r/c) and the closest reference length") {
  SUBCASE("a shorter candidate: c = 6, r = 10, every n-gram matches, BLEU-4 = exp(1 - 10/6) ~ 0.5134") {
    const bleu_result b = bleu_score(std::vector<caption_example>{{"a small red circle left of", {ten}}});
    CHECK(b.correct == std::array<index_t, 4>{6, 5, 4, 3});
    CHECK(b.guess == b.correct);
    CHECK(near_rel(b.brevity_penalty, std::exp(1.0 - 10.0 / 6.0), 1e-9));
    CHECK(near_rel(b.bleu4(), std::exp(-2.0 / 3.0), 1e-9));
    CHECK(near_rel(b.bleu4(), 0.513417119032592, 1e-9));
  }
  SUBCASE("closest, ties to the shorter: references of 4 and 8 tokens, c = 6 -> r = 4, no penalty") {
    const bleu_result b = bleu_score(std::vector<caption_example>{
        {"a small red circle left of", {"a small red circle left of a square", "a small red circle"}}});
    CHECK(b.reference_length == 4);  // |4 - 6| = |8 - 6|: the shorter wins
    CHECK(b.brevity_penalty == 1.0);
    CHECK(b.correct == b.guess);  // every n-gram is in the 8-token reference
    CHECK(b.bleu4() > 1.0 - 1e-9);
  }
  SUBCASE("closest, not shortest: references of 3 and 7 tokens, c = 6 -> r = 7, BP = exp(1 - 7/6)") {
    const bleu_result b = bleu_score(std::vector<caption_example>{
        {"a small red circle left of", {"a red circle", "a small red circle left of a"}}});
    CHECK(b.reference_length == 7);
    CHECK(near_rel(b.brevity_penalty, std::exp(1.0 - 7.0 / 6.0), 1e-9));
    CHECK(near_rel(b.bleu4(), std::exp(1.0 - 7.0 / 6.0), 1e-9));
  }
}

TEST_CASE("BLEU: the corpus score sums the counts over the images; it is not the mean of sentence scores") {
  // image 0: the identical caption (correct = guess = {10, 9, 8, 7}, c = r = 10)
  // image 1: the no-4-gram caption above (correct {6, 4, 2, 0}, guess {7, 6, 5, 4}, c = 7, r = 8)
  // corpus: correct {16, 13, 10, 7}, guess {17, 15, 13, 11}, c = 17, r = 18:
  // BLEU-4 = (16/17 13/15 10/13 7/11)^(1/4) exp(1 - 18/17) ~ 0.749, while the mean of the two sentence
  // BLEU-4 is ~ (1 + 7.5e-5) / 2.
  const std::vector<caption_example> corpus{{ten, {ten}},
                                            {"a red circle and a blue square", {"a red circle left of a blue square"}}};
  const bleu_result b = bleu_score(corpus);
  CHECK(b.correct == std::array<index_t, 4>{16, 13, 10, 7});
  CHECK(b.guess == std::array<index_t, 4>{17, 15, 13, 11});
  CHECK(b.candidate_length == 17);
  CHECK(b.reference_length == 18);
  const double want = std::pow(p(16, 17) * p(13, 15) * p(10, 13) * p(7, 11), 0.25) * bp(17, 18);
  CHECK(near_rel(b.bleu4(), want, 1e-14));
  CHECK(near_rel(b.bleu4(), std::pow(16.0 / 17 * 13.0 / 15 * 10.0 / 13 * 7.0 / 11, 0.25) * std::exp(1.0 - 18.0 / 17.0), 1e-9));
  REQUIRE(b.per_image.size() == 2);
  CHECK(b.per_image[0][3] > 1.0 - 1e-9);
  CHECK(near_rel(b.per_image[1][3], std::pow(p(6, 7) * p(4, 6) * p(2, 5) * p(0, 4), 0.25) * bp(7, 8), 1e-14));
  CHECK(std::fabs(b.bleu4() - (b.per_image[0][3] + b.per_image[1][3]) / 2) > 0.2);
}

TEST_CASE("BLEU: an empty candidate scores ~0; errors") {
  // c = 0: every guess is 0, p_n = 1e-15 / 1e-9 = 1e-6, and BP = exp(1 - 1/ratio) with ratio ~ 1e-16 is 0.
  const bleu_result b = bleu_score(std::vector<caption_example>{{"", {ten}}});
  CHECK(b.guess == std::array<index_t, 4>{0, 0, 0, 0});
  CHECK(b.reference_length == 10);
  CHECK(b.bleu4() == 0.0);
  CHECK_THROWS_AS(bleu_score(std::vector<caption_example>{}), value_error);
  CHECK_THROWS_AS(bleu_score(std::vector<caption_example>{{ten, {ten}}, {ten, {}}}), value_error);
}

// ---------------------------------------------------------------------------------------------------
// CIDEr-D
// ---------------------------------------------------------------------------------------------------
TEST_CASE("CIDEr-D: a corpus of one image scores 0 even for a perfect caption (every idf is log 1 - log 1)") {
  const cider_result c = cider_d(std::vector<caption_example>{{ten, {ten}}});
  CHECK(c.score == 0.0);
  REQUIRE(c.per_image.size() == 1);
  CHECK(c.per_image[0] == 0.0);
}

TEST_CASE("CIDEr-D: a candidate identical to its reference scores 10 when every order has a weighted n-gram") {
  // Two images, references "a small red circle" and "a large blue square", candidates the same.
  // df("a") = 2 = I: weight log 2 - log 2 = 0; every other n-gram has df 1: weight log 2. The candidate's
  // vector equals the reference's at every order 1..4 and each order has a non-zero norm: cosine 1,
  // delta 0, so CIDEr-D = 10 * (1 + 1 + 1 + 1) / 4 = 10 for each image.
  const cider_result c = cider_d(std::vector<caption_example>{{"a small red circle", {"a small red circle"}},
                                                              {"a large blue square", {"a large blue square"}}});
  CHECK(near_rel(c.per_image[0], 10.0));
  CHECK(near_rel(c.per_image[1], 10.0));
  CHECK(near_rel(c.score, 10.0));
  // Three tokens have no 4-gram: order 4 has norm 0 and adds 0: 10 * 3 / 4 = 7.5.
  const cider_result three =
      cider_d(std::vector<caption_example>{{"a red circle", {"a red circle"}}, {"a blue square", {"a blue square"}}});
  CHECK(near_rel(three.score, 7.5));
  // With the same words in both images ("a red circle" twice), every weight is 0 again: 0.
  const cider_result same =
      cider_d(std::vector<caption_example>{{"a red circle", {"a red circle"}}, {"a red circle", {"a red circle"}}});
  CHECK(same.score == 0.0);
}

TEST_CASE("CIDEr-D: the Gaussian length penalty, and the mean over the references") {
  // Image A: candidate "red circle", reference "red circle now".
  // Image B: candidate "blue square", references "blue square" and "circle now".
  // df: red 1, circle 2, now 2, red-circle 1, circle-now 2, red-circle-now 1, blue 1, square 1, blue-square 1;
  // with L = log 2 the weights are L for df 1 and 0 for df 2.
  // A: candidate  order 1 {red L, circle 0}, order 2 {red-circle L}; 1 bigram
  //    reference  order 1 {red L, circle 0, now 0}, order 2 {red-circle L, circle-now 0}, order 3 {.. L}; 2 bigrams
  //    cosines 1, 1 (norms L and L), 0 (the candidate has no trigram), 0; delta = 1 - 2 = -1:
  //    CIDEr-D(A) = 10 * (1 + 1) exp(-1 / (2 * 6^2)) / 4 = 5 exp(-1/72) ~ 4.9310
  // B: "blue square" against "blue square": cosines 1, 1, 0, 0, delta 0; against "circle now": every
  //    weight of that reference is 0 (norm 0: not divided) and it shares nothing: 0, 0, 0, 0.
  //    CIDEr-D(B) = 10 * ((1 + 0) + (1 + 0)) / 4 / 2 references = 2.5
  const std::vector<caption_example> corpus{{"red circle", {"red circle now"}},
                                            {"blue square", {"blue square", "circle now"}}};
  const cider_result c = cider_d(corpus);
  const double g = std::exp(-1.0 / 72.0);
  CHECK(near_rel(c.per_image[0], 5 * g));
  CHECK(near_rel(c.per_image[1], 2.5));
  CHECK(near_rel(c.score, (5 * g + 2.5) / 2));
  // sigma is the penalty's width: a huge one removes it
  CHECK(near_rel(cider_d(corpus, 1e9).per_image[0], 5.0));
}

TEST_CASE("CIDEr-D: a repeated word gains nothing past the reference's count (the D clipping)") {
  // Image A: candidate "red red red", reference "red circle". Image B: "blue square" twice.
  // Every reference n-gram has df 1 (weight L = log 2); "red red" and "red red red" are in no reference
  // (df 0 -> log max(1, 0) = 0: weight tf * L, counted in the candidate's norm).
  // A: order 1: candidate {red 3L} (norm 3L), reference {red L, circle L} (norm sqrt(2) L):
  //      clipped: min(3L, L) * L / (3L * sqrt(2) L) = 1 / (3 sqrt 2)   (unclipped it would be 1 / sqrt 2)
  //    order 2: red-red is not in the reference: 0.  order 3: the reference has no trigram: 0.
  //    delta = 2 - 1 bigrams = 1: CIDEr-D(A) = 10 exp(-1/72) / (3 sqrt 2) / 4 ~ 0.5811
  // B: cosines 1, 1, 0, 0: 5.
  const cider_result c =
      cider_d(std::vector<caption_example>{{"red red red", {"red circle"}}, {"blue square", {"blue square"}}});
  const double g = std::exp(-1.0 / 72.0);
  CHECK(near_rel(c.per_image[0], 10 * g / (3 * std::sqrt(2.0)) / 4));
  CHECK(near_rel(c.per_image[1], 5.0));
}

TEST_CASE("CIDEr-D: errors") {
  CHECK_THROWS_AS(cider_d(std::vector<caption_example>{}), value_error);
  CHECK_THROWS_AS(cider_d(std::vector<caption_example>{{ten, {ten}}, {ten, {}}}), value_error);
  CHECK_THROWS_AS(cider_d(std::vector<caption_example>{{ten, {ten}}}, 0.0), value_error);
}

// ---------------------------------------------------------------------------------------------------
// Against the reference formulas on synthetic captions
// ---------------------------------------------------------------------------------------------------
TEST_CASE("BLEU and CIDEr-D match make_caption_metrics_fixtures.py on 20 synthetic-world captions") {
  std::ifstream in(BLIP2_FIXTURE_DIR "/caption_metrics/synthetic.txt");
  REQUIRE(in);
  std::vector<caption_example> corpus;
  std::set<std::string> kinds;
  std::vector<double> bleu, cider_images;
  std::vector<std::vector<double>> bleu_images;
  std::vector<index_t> correct, guess, lengths;
  double cider = -1, brevity = -1;
  auto numbers = [](std::istringstream& s) {
    std::vector<double> v;
    for (double x; s >> x;) v.push_back(x);
    return v;
  };
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp), rest = sp == std::string::npos ? "" : line.substr(sp + 1);
    std::istringstream s(rest);
    if (key == "image") {
      corpus.emplace_back();
      kinds.insert(rest);
    } else if (key == "candidate") {
      REQUIRE(!corpus.empty());
      corpus.back().candidate = rest;
    } else if (key == "reference") {
      REQUIRE(!corpus.empty());
      corpus.back().references.push_back(rest);
    } else if (key == "bleu") {
      bleu = numbers(s);
    } else if (key == "bleu_correct" || key == "bleu_guess" || key == "bleu_lengths") {
      auto& dst = key == "bleu_correct" ? correct : key == "bleu_guess" ? guess : lengths;
      for (index_t x; s >> x;) dst.push_back(x);
    } else if (key == "bleu_brevity_penalty") {
      s >> brevity;
    } else if (key == "bleu_image") {
      index_t i = 0;
      s >> i;
      CHECK(i == static_cast<index_t>(bleu_images.size()));
      bleu_images.push_back(numbers(s));
    } else if (key == "cider") {
      s >> cider;
    } else if (key == "cider_image") {
      index_t i = 0;
      s >> i;
      CHECK(i == static_cast<index_t>(cider_images.size()));
      cider_images.push_back(numbers(s).at(0));
    } else {
      FAIL("unknown fixture line: ", line);
    }
  }
  REQUIRE(corpus.size() == 20);
  REQUIRE(kinds.size() == 12);  // every kind of candidate the script makes is there
  REQUIRE(bleu.size() == 4);
  REQUIRE(correct.size() == 4);
  REQUIRE(guess.size() == 4);
  REQUIRE(lengths.size() == 2);
  REQUIRE(bleu_images.size() == 20);
  REQUIRE(cider_images.size() == 20);
  // The fixture is not degenerate: a score strictly between the extremes.
  CHECK(bleu[3] > 0.1);
  CHECK(bleu[3] < 0.99);
  CHECK(cider > 0.5);
  CHECK(cider < 9.5);

  const bleu_result b = bleu_score(corpus);
  for (std::size_t k = 0; k < 4; ++k) {
    CHECK(b.correct[k] == correct[k]);
    CHECK(b.guess[k] == guess[k]);
    CHECK(near_rel(b.score[k], bleu[k]));
  }
  CHECK(b.candidate_length == lengths[0]);
  CHECK(b.reference_length == lengths[1]);
  CHECK(near_rel(b.brevity_penalty, brevity));
  for (std::size_t i = 0; i < corpus.size(); ++i)
    for (std::size_t k = 0; k < 4; ++k) CHECK_MESSAGE(near_rel(b.per_image[i][k], bleu_images[i].at(k)), "image ", i, " n ", k + 1);

  const cider_result c = cider_d(corpus);
  CHECK(near_rel(c.score, cider));
  for (std::size_t i = 0; i < corpus.size(); ++i) CHECK_MESSAGE(near_rel(c.per_image[i], cider_images[i]), "image ", i);
}

// ---------------------------------------------------------------------------------------------------
// VQA accuracy
// ---------------------------------------------------------------------------------------------------
TEST_CASE("VQA: answers match after lowercasing, trimming and collapsing spaces, nothing more") {
  CHECK(normalize_answer("  Red ") == "red");
  CHECK(normalize_answer("LEFT \t  of\n") == "left of");
  CHECK(normalize_answer("") == "");
  CHECK(normalize_answer(" \t ") == "");
  CHECK(answer_matches("Large", "large"));
  CHECK(answer_matches(" left  of ", "left of"));
  CHECK_FALSE(answer_matches("red.", "red"));     // punctuation counts
  CHECK_FALSE(answer_matches("a red", "red"));    // articles count
  CHECK_FALSE(answer_matches("leftof", "left of"));
  CHECK_FALSE(answer_matches("", "red"));
}

TEST_CASE("VQA: accuracy per question type, and overall over questions (not the mean of the types)") {
  vqa_accuracy acc;
  CHECK(acc.accuracy() == 0.0);
  CHECK(acc.add("colour", "Red", "red"));
  CHECK(acc.add("colour", "blue ", "blue"));
  CHECK_FALSE(acc.add("colour", "green", "cyan"));
  CHECK(acc.add("shape", "circle", "circle"));
  // relation questions accept either wording
  const strings left{"left", "left of"};
  CHECK(acc.add("relation", "Left  of", std::span<const std::string>(left)));
  CHECK_FALSE(acc.add("relation", "right", std::span<const std::string>(left)));
  CHECK(acc.overall().questions == 6);
  CHECK(acc.overall().correct == 4);
  CHECK(acc.accuracy() == doctest::Approx(4.0 / 6.0));  // not (2/3 + 1 + 1/2) / 3
  CHECK(acc.accuracy("colour") == doctest::Approx(2.0 / 3.0));
  CHECK(acc.accuracy("shape") == 1.0);
  CHECK(acc.accuracy("relation") == 0.5);
  CHECK(acc.accuracy("size") == 0.0);  // never asked
  std::vector<std::string> types;
  for (const auto& [type, count] : acc.by_type()) types.push_back(type);
  CHECK(types == strings{"colour", "relation", "shape"});
  CHECK(acc.by_type().at("colour").questions == 3);
}
