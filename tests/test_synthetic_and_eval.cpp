// test_synthetic_and_eval: the pieces around the stage-1 demo. The synthetic shapes world (determinism,
// captions, the held-out split, the evaluation set with its distractors), its language (the caption
// grammar, caption scoring, questions and answers), the frozen patch encoder, the retrieval metrics and
// BLIP-2's re-ranking protocol, the CSV log, the PNG plot and the progress output.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <stb/stb_image.h>

#include "blip2/core/host_tensor.hpp"
#include "blip2/eval/retrieval.hpp"
#include "blip2/train/csv_log.hpp"
#include "blip2/train/progress.hpp"

// The demo's support (examples/support/, on this test's include path): not the library.
#include "support/frozen_patch_encoder.hpp"
#include "support/plot_png.hpp"
#include "support/scene_language.hpp"
#include "support/synthetic_shapes.hpp"

using namespace blip2;
using namespace blip2::demo;
namespace sy = blip2::demo::synthetic;

namespace {
// A scratch directory for the files the tests write, removed when the program ends.
struct scratch {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("blip2_test_synth_" + std::to_string(::getpid()));
  scratch() { std::filesystem::create_directories(dir); }
  ~scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
std::filesystem::path scratch_dir() {
  static scratch s;
  return s.dir;
}
std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
std::vector<std::int64_t> ids_of(const sy::shapes_world& w, const sy::scene& s, sy::mention m) {
  host_tensor<std::int64_t, 1> ids({w.num_tokens()}), mask({w.num_tokens()});
  w.caption(s, m, ids.view(), mask.view());
  return ids.storage();
}
const sy::scene red_circle_left_of_blue_square{sy::layout::horizontal, {sy::circle, sy::red, 0}, {sy::square, sy::blue, 1}};
}  // namespace

// ---------------------------------------------------------------------------------------------------
// The synthetic world
// ---------------------------------------------------------------------------------------------------
TEST_CASE("synthetic: vocabulary, and the combinatorics of the default world") {
  CHECK(sy::vocab_size == 25);
  CHECK(sy::vocabulary[sy::pad_id] == "[PAD]");
  CHECK(sy::pad_id == 0);
  CHECK(sy::vocabulary[sy::cls_id] == "[CLS]");
  CHECK(sy::vocabulary[sy::sep_id] == "[SEP]");
  CHECK(sy::dec_id == sy::vocab_size - 1);
  CHECK(sy::vocabulary[sy::dec_id] == "[DEC]");
  CHECK(sy::token_id("circle") == sy::first_shape_id + sy::circle);
  CHECK(sy::token_id("cyan") == sy::first_colour_id + sy::cyan);
  CHECK_THROWS_AS(sy::token_id("hexagon"), value_error);
  std::set<std::string_view> words(sy::vocabulary.begin(), sy::vocabulary.end());
  CHECK(words.size() == sy::vocabulary.size());  // no duplicates

  const sy::shapes_world w;
  const auto c = w.counts();
  // 4 shapes x 6 colours x 2 sizes = 48 objects; 8 of them have a held-out (shape, colour) pair.
  CHECK(c.objects == 48);
  CHECK(c.held_out_objects == 8);
  // Scenes: 2 layouts x ordered pairs of different objects.
  CHECK(c.scenes == 2 * 48 * 47);
  CHECK(c.train_scenes == 2 * 40 * 39);
  CHECK(c.held_out_scenes == c.scenes - c.train_scenes);
  CHECK(c.held_out_scenes == 1392);
  // Every held-out scene has its own caption (the caption determines the scene), so 1000 unique
  // evaluation captions exist.
  CHECK(c.held_out_scenes >= 1000);
}

TEST_CASE("synthetic: captions name both objects and their relation, padded to T") {
  const sy::shapes_world w;
  const auto& s = red_circle_left_of_blue_square;
  CHECK(w.caption_text(s, sy::mention::first_first) == "a small red circle left of a large blue square");
  CHECK(w.caption_text(s, sy::mention::second_first) == "a large blue square right of a small red circle");
  const sy::scene v{sy::layout::vertical, s.first, s.second};
  CHECK(w.caption_text(v, sy::mention::first_first) == "a small red circle above a large blue square");
  CHECK(w.caption_text(v, sy::mention::second_first) == "a large blue square below a small red circle");

  const sy::scene g{sy::layout::horizontal, {sy::triangle, sy::green, 1}, {sy::cross, sy::yellow, 0}};
  const auto ids = ids_of(w, g, sy::mention::first_first);
  REQUIRE(ids.size() == 12u);
  const std::vector<std::int64_t> expect{sy::cls_id,
                                         sy::token_id("a"),
                                         sy::token_id("large"),
                                         sy::token_id("green"),
                                         sy::token_id("triangle"),
                                         sy::token_id("left"),
                                         sy::token_id("of"),
                                         sy::token_id("a"),
                                         sy::token_id("small"),
                                         sy::token_id("yellow"),
                                         sy::token_id("cross"),
                                         sy::sep_id};
  CHECK(ids == expect);
  // "above" is one word: one [PAD] at the end, and the mask says so.
  host_tensor<std::int64_t, 1> id2({12}), mask({12});
  w.caption(v, sy::mention::first_first, id2.view(), mask.view());
  CHECK(id2[10] == sy::sep_id);
  CHECK(id2[11] == sy::pad_id);
  CHECK(mask[10] == 1);
  CHECK(mask[11] == 0);
  CHECK(sy::shapes_world::decode(id2.storage()) == "a small red circle above a large blue square");
  // A longer T pads more; a shorter one is refused.
  sy::shapes_config cfg;
  cfg.text_len = 16;
  const sy::shapes_world w16(cfg);
  CHECK(ids_of(w16, g, sy::mention::first_first).size() == 16u);
  cfg.text_len = 11;
  CHECK_THROWS_AS(sy::shapes_world{cfg}, value_error);
  host_tensor<std::int64_t, 1> bad({13}), badm({13});
  CHECK_THROWS_AS(w.caption(g, sy::mention::first_first, bad.view(), badm.view()), shape_error);
}

TEST_CASE("synthetic: the training stream is a pure function of (seed, index)") {
  const sy::shapes_world w;
  const index_t S = 32, T = 12;
  host_tensor<float, 4> a({8, S, S, 3}), b({8, S, S, 3}), c({8, S, S, 3});
  host_tensor<std::int64_t, 2> ia({8, T}), ma({8, T}), ib({8, T}), mb({8, T}), ic({8, T}), mc({8, T});
  std::vector<sy::scene> sa(8), sb(8);
  w.train_batch(42, 100, a.view(), ia.view(), ma.view(), sa);
  w.train_batch(42, 100, b.view(), ib.view(), mb.view(), sb);
  CHECK(a.storage() == b.storage());
  CHECK(ia.storage() == ib.storage());
  CHECK(ma.storage() == mb.storage());
  CHECK(sa == sb);
  // Two half batches give the same examples as one whole batch.
  host_tensor<float, 4> h0({4, S, S, 3}), h1({4, S, S, 3});
  host_tensor<std::int64_t, 2> i0({4, T}), m0({4, T}), i1({4, T}), m1({4, T});
  w.train_batch(42, 100, h0.view(), i0.view(), m0.view());
  w.train_batch(42, 104, h1.view(), i1.view(), m1.view());
  std::vector<float> joined = h0.storage();
  joined.insert(joined.end(), h1.storage().begin(), h1.storage().end());
  CHECK(joined == a.storage());
  std::vector<std::int64_t> jids = i0.storage();
  jids.insert(jids.end(), i1.storage().begin(), i1.storage().end());
  CHECK(jids == ia.storage());
  // Another seed gives other examples.
  w.train_batch(43, 100, c.view(), ic.view(), mc.view());
  CHECK(c.storage() != a.storage());
  // The images are what the captions say: 2 objects, values in [0, 1], the caption matches the scene.
  for (index_t k = 0; k < 8; ++k) {
    const auto& s = sa[static_cast<std::size_t>(k)];
    CHECK_FALSE(w.is_held_out(s));
    std::vector<std::int64_t> row(ia.storage().begin() + k * T, ia.storage().begin() + (k + 1) * T);
    const bool ff = row == ids_of(w, s, sy::mention::first_first);
    const bool sf = row == ids_of(w, s, sy::mention::second_first);
    CHECK((ff || sf));
  }
  for (float v : a.storage()) REQUIRE((v >= 0.0f && v <= 1.0f));
}

TEST_CASE("synthetic: a rendered scene has each object's colour on its side") {
  const sy::shapes_world w;
  const auto& s = red_circle_left_of_blue_square;
  const auto img = w.render(s, 7, 3);
  // Mean colour of the left and the right halves (background is black).
  double left[3] = {0, 0, 0}, right[3] = {0, 0, 0};
  for (index_t y = 0; y < 32; ++y)
    for (index_t x = 0; x < 32; ++x)
      for (index_t ch = 0; ch < 3; ++ch) (x < 16 ? left : right)[ch] += img(y, x, ch);
  CHECK(left[0] > 5 * left[2]);    // red on the left
  CHECK(right[2] > 3 * right[0]);  // blue on the right
  CHECK(right[2] > 2.5 * left[0]);  // the large square covers more than the small circle
  const sy::scene v{sy::layout::vertical, s.first, s.second};
  const auto imv = w.render(v, 7, 3);
  double top_red = 0, top_blue = 0, bottom_blue = 0;
  for (index_t y = 0; y < 32; ++y)
    for (index_t x = 0; x < 32; ++x) {
      if (y < 16) top_red += imv(y, x, 0), top_blue += imv(y, x, 2);
      else bottom_blue += imv(y, x, 2);
    }
  CHECK(top_red > 5 * top_blue);
  CHECK(bottom_blue > 10);
}

TEST_CASE("synthetic: held-out combinations never appear in training") {
  const sy::shapes_world w;
  for (const auto& s : w.train_scenes()) REQUIRE_FALSE(w.is_held_out(s));
  for (const auto& s : w.held_out_scenes()) REQUIRE(w.is_held_out(s));
  // The stream: 20000 draws, none with a held-out (shape, colour) pair, and every train scene reachable.
  std::set<std::int64_t> seen;
  for (std::uint64_t i = 0; i < 20000; ++i) {
    const auto [s, m] = w.train_pick(5, i);
    for (const auto* o : {&s.first, &s.second})
      for (auto [sh, co] : w.config().held_out) REQUIRE_FALSE((o->shape == sh && o->colour == co));
    seen.insert(w.scene_index(s));
  }
  CHECK(seen.size() > 0.99 * static_cast<double>(w.train_scenes().size()));
  // Every held-out pair is present in the held-out scenes (e.g. a red circle).
  for (auto [sh, co] : w.config().held_out) {
    bool found = false;
    for (const auto& s : w.held_out_scenes()) found |= s.first.shape == sh && s.first.colour == co;
    CHECK(found);
  }
  // With swap_pairs = 1 every odd example is an attribute swap of the even one before it, still a
  // train scene.
  sy::shapes_config sc;
  sc.swap_pairs = 1.0f;
  const sy::shapes_world ws(sc);
  int kinds[3] = {0, 0, 0};
  for (std::uint64_t i = 0; i < 2000; i += 2) {
    const auto a = ws.train_pick(9, i).first, b = ws.train_pick(9, i + 1).first;
    REQUIRE_FALSE(ws.is_held_out(b));
    REQUIRE(a != b);
    const bool pos = b == sy::shapes_world::position_swap(a), col = b == sy::shapes_world::colour_swap(a),
               siz = b == sy::shapes_world::size_swap(a);
    REQUIRE((pos || col || siz));
    kinds[0] += pos;
    kinds[1] += col;
    kinds[2] += siz;
  }
  CHECK(kinds[1] > 150);
  CHECK(kinds[2] > 150);
  CHECK(ws.train_pick(9, 4).first == w.train_pick(9, 4).first);  // even examples are unchanged
  // Bad configs are refused.
  sy::shapes_config bad;
  bad.held_out = {{sy::diamond, sy::red}};  // diamond is not among the first 4 shapes
  CHECK_THROWS_AS(sy::shapes_world{bad}, value_error);
}

TEST_CASE("synthetic: the evaluation set has 1000 held-out pairs with unique captions and distractors") {
  const sy::shapes_world w;
  const auto e = sy::build_eval_set(w, 1000, 2024);
  REQUIRE(e.size() == 1000);
  REQUIRE(e.mentions.size() == 1000u);
  std::set<std::string> captions;
  std::set<std::vector<std::int64_t>> id_rows;
  std::set<std::int64_t> scenes;
  for (std::size_t k = 0; k < e.scenes.size(); ++k) {
    CHECK(w.is_held_out(e.scenes[k]));
    captions.insert(w.caption_text(e.scenes[k], e.mentions[k]));
    id_rows.insert(ids_of(w, e.scenes[k], e.mentions[k]));
    scenes.insert(w.scene_index(e.scenes[k]));
  }
  CHECK(captions.size() == 1000u);
  CHECK(id_rows.size() == 1000u);
  CHECK(scenes.size() == 1000u);
  // Distractors: position swaps always stay held-out; colour swaps do for the rectangle of held-out pairs.
  MESSAGE("eval set: ", e.position_swap_pairs, " position-swap pairs, ", e.colour_swap_pairs, " colour-swap pairs, ",
          e.size_swap_pairs, " size-swap pairs; ", e.scenes_with_distractor, " of 1000 scenes have a distractor");
  CHECK(e.position_swap_pairs >= 300);
  CHECK(e.colour_swap_pairs >= 150);
  CHECK(e.size_swap_pairs >= 100);
  CHECK(e.scenes_with_distractor >= 900);
  // Recount by hand.
  std::int64_t pos = 0;
  for (const auto& s : e.scenes) pos += scenes.count(w.scene_index(sy::shapes_world::position_swap(s)));
  CHECK(pos == 2 * e.position_swap_pairs);
  // Both mentions occur.
  std::int64_t ff = 0;
  for (auto m : e.mentions) ff += m == sy::mention::first_first;
  CHECK(ff > 400);
  CHECK(ff < 600);
  // Deterministic in the seed; another seed, another set.
  const auto e2 = sy::build_eval_set(w, 1000, 2024);
  CHECK(e2.scenes == e.scenes);
  CHECK(e2.mentions == e.mentions);
  CHECK(sy::build_eval_set(w, 1000, 2025).scenes != e.scenes);
  CHECK_THROWS_AS(sy::build_eval_set(w, 1393, 1), value_error);
  // Rendering: images from render_seed, captions as above.
  host_tensor<float, 4> im({1000, 32, 32, 3});
  host_tensor<std::int64_t, 2> ids({1000, 12}), mask({1000, 12});
  sy::render_eval_set(w, e, im.view(), ids.view(), mask.view());
  const auto one = w.render(e.scenes[17], e.render_seed, 17);
  CHECK(std::equal(one.storage().begin(), one.storage().end(), im.storage().begin() + 17 * 32 * 32 * 3));
  std::vector<std::int64_t> row(ids.storage().begin() + 17 * 12, ids.storage().begin() + 18 * 12);
  CHECK(row == ids_of(w, e.scenes[17], e.mentions[17]));
}

// ---------------------------------------------------------------------------------------------------
// The world's language (scene_language.hpp): the caption grammar, caption scoring, questions
// ---------------------------------------------------------------------------------------------------
namespace {
// Splits on single spaces (the test's own splitter, independent of the header's).
std::vector<std::string> words_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
template <std::size_t N>
int index_in(const std::array<std::string_view, N>& names, const std::string& w) {
  const auto it = std::find(names.begin(), names.end(), w);
  return it == names.end() ? -1 : static_cast<int>(it - names.begin());
}
// Whether object k (0 = first = left/top, 1 = second) of s fits a referring expression: each word of the
// expression constrains one attribute ("shape" constrains nothing) or the place. An unknown word fits nothing.
bool fits(const sy::scene& s, int k, const std::string& ref) {
  const sy::object& o = k == 0 ? s.first : s.second;
  const bool hz = s.arrangement == sy::layout::horizontal;
  for (const std::string& w : words_of(ref)) {
    if (const int i = index_in(sy::shape_names, w); i >= 0) {
      if (o.shape != i) return false;
    } else if (const int c = index_in(sy::colour_names, w); c >= 0) {
      if (o.colour != c) return false;
    } else if (const int z = index_in(sy::size_names, w); z >= 0) {
      if (o.size != z) return false;
    } else if (w == "left" || w == "right") {
      if (!hz || (w == "right") != (k == 1)) return false;
    } else if (w == "top" || w == "bottom") {
      if (hz || (w == "bottom") != (k == 1)) return false;
    } else if (w != "shape") {
      return false;
    }
  }
  return true;
}
// The expression's words of one kind: which attributes (or the place) it names.
bool names_kind(const std::string& ref, const std::string& kind) {
  for (const std::string& w : words_of(ref)) {
    if (kind == "shape" && index_in(sy::shape_names, w) >= 0) return true;
    if (kind == "colour" && index_in(sy::colour_names, w) >= 0) return true;
    if (kind == "size" && index_in(sy::size_names, w) >= 0) return true;
    if (kind == "position" && (w == "left" || w == "right" || w == "top" || w == "bottom")) return true;
  }
  return false;
}
std::string answer_for(const sy::scene& s, int k, const std::string& type) {
  const sy::object& o = k == 0 ? s.first : s.second;
  if (type == "colour") return std::string(sy::colour_names[static_cast<std::size_t>(o.colour)]);
  if (type == "shape") return std::string(sy::shape_names[static_cast<std::size_t>(o.shape)]);
  if (type == "size") return std::string(sy::size_names[static_cast<std::size_t>(o.size)]);
  if (s.arrangement == sy::layout::horizontal) return k == 0 ? "left" : "right";
  return k == 0 ? "above" : "below";
}
std::vector<sy::scene> all_scenes(const sy::shapes_world& w) {
  std::vector<sy::scene> all(w.train_scenes().begin(), w.train_scenes().end());
  all.insert(all.end(), w.held_out_scenes().begin(), w.held_out_scenes().end());
  return all;
}
// score_caption(w, truth, predicted) against the expected fields (the caption shown on a failure).
void check_score(const sy::shapes_world& w, const sy::scene& truth, const std::string& predicted, bool grammatical,
                 bool exact, int shape, int colour, int size, int relation) {
  CAPTURE(predicted);
  const sy::caption_score got = sy::score_caption(w, truth, predicted);
  CHECK(got.grammatical == grammatical);
  CHECK(got.exact == exact);
  CHECK(got.shape == shape);
  CHECK(got.colour == colour);
  CHECK(got.size == size);
  CHECK(got.relation == relation);
}
}  // namespace

TEST_CASE("scene_language: every caption of every scene parses back to its scene") {
  const sy::shapes_world w;
  const auto all = all_scenes(w);
  REQUIRE(all.size() == 4512u);
  std::int64_t round_trips = 0;
  for (const sy::scene& s : all) {
    const auto caps = sy::valid_captions(w, s);
    REQUIRE(caps.size() == 2u);
    CHECK(caps[0] == w.caption_text(s, sy::mention::first_first));
    CHECK(caps[1] == w.caption_text(s, sy::mention::second_first));
    CHECK(caps[0] != caps[1]);
    for (const std::string& c : caps) {
      const auto p = sy::parse_caption(w, c);
      REQUIRE(p.has_value());
      round_trips += *p == s;
    }
  }
  CHECK(round_trips == 2 * 4512);
  // Surrounding ASCII whitespace is ignored.
  const auto p = sy::parse_caption(w, " \t a small red circle above a large blue square\r\n ");
  REQUIRE(p.has_value());
  CHECK(*p == sy::scene{sy::layout::vertical, {sy::circle, sy::red, 0}, {sy::square, sy::blue, 1}});
  // "right of" and "below" name the second object first.
  CHECK(sy::parse_caption(w, "a large blue square right of a small red circle") == red_circle_left_of_blue_square);
  CHECK(sy::parse_caption(w, "a large blue square below a small red circle") ==
        sy::scene{sy::layout::vertical, {sy::circle, sy::red, 0}, {sy::square, sy::blue, 1}});
  // valid_captions refuses a scene the world cannot hold.
  CHECK_THROWS_AS(sy::valid_captions(w, {sy::layout::horizontal, {0, 0, 0}, {0, 0, 0}}), value_error);
  CHECK_THROWS_AS(sy::valid_captions(w, {sy::layout::horizontal, {0, sy::white, 0}, {0, 0, 0}}), value_error);
}

TEST_CASE("scene_language: parse_caption rejects everything caption_text cannot write for the config") {
  const sy::shapes_world w;  // 4 shapes, 6 colours: no diamond, no orange or white
  const std::vector<std::string> bad{
      "",
      "   ",
      "a small white circle left of a large blue square",      // colour 7 >= num_colours
      "a small red circle left of a large orange square",      // colour 6 >= num_colours
      "a small red diamond left of a large blue square",       // shape 4 >= num_shapes
      "a small red circle left of a small red circle",         // two identical objects
      "a small red circle above a small red circle",           // identical, vertical
      "a small red circle left of a large blue square.",       // punctuation
      "a small red circle, left of a large blue square",       // punctuation inside
      "a small red circle left a large blue square",           // "left" without "of"
      "a small red circle right a large blue square",          // "right" without "of"
      "a small red circle above of a large blue square",       // "above" with "of"
      "a small red circle left of a large blue",               // missing word
      "small red circle left of a large blue square",          // missing article
      "a small red circle left of a large blue square please", // extra word
      "a small red circle left of a large blue square left of a small green cross",
      "a small red circle left of  a large blue square",       // two spaces
      "a small red circle\tleft of a large blue square",       // a tab between words
      "A small red circle left of a large blue square",        // capital
      "a red small circle left of a large blue square",        // attribute order
      "a medium red circle left of a large blue square",       // unknown size
      "a small red circle near a large blue square",           // unknown relation
      "a small red circle left of a large blue square [SEP]",  // special token
      "the small red circle above a large blue square",
      "a small red circle",
      "left of",
  };
  for (const std::string& t : bad) {
    CAPTURE(t);
    CHECK_FALSE(sy::parse_caption(w, t).has_value());
  }
  // The same words are captions of a world that has them.
  sy::shapes_config cfg;
  cfg.num_shapes = 5;
  cfg.num_colours = 8;
  const sy::shapes_world big(cfg);
  const auto p = sy::parse_caption(big, "a small white diamond left of a large orange square");
  REQUIRE(p.has_value());
  CHECK(*p == sy::scene{sy::layout::horizontal, {sy::diamond, sy::white, 0}, {sy::square, sy::orange, 1}});
}

TEST_CASE("scene_language: score_caption and caption_tally, worked by hand") {
  const sy::shapes_world w;
  const sy::scene& t = red_circle_left_of_blue_square;  // small red circle (left), large blue square (right)
  // The other mention of the truth: exact, everything right.
  const std::string other = "a large blue square right of a small red circle";
  check_score(w, t, other, true, true, 2, 2, 2, 1);
  // One colour wrong: the first object's colour. Its first object still shares shape and size (2) with
  // the truth's first against nothing (0) with the truth's second: relation right.
  const std::string green = "a small green circle left of a large blue square";
  check_score(w, t, green, true, false, 2, 1, 2, 1);
  // The objects exchanged: every slot wrong; the predicted first object is the truth's second (3 shared
  // against 0): relation wrong.
  const std::string exchanged = "a large blue square left of a small red circle";
  check_score(w, t, exchanged, true, false, 0, 0, 0, 0);
  // The wrong layout: attributes right, relation wrong.
  const std::string vertical = "a small red circle above a large blue square";
  check_score(w, t, vertical, true, false, 2, 2, 2, 0);
  // Ungrammatical (a trailing full stop): zero on everything, even though every word is right.
  const std::string stop = "a small red circle left of a large blue square.";
  check_score(w, t, stop, false, false, 0, 0, 0, 0);
  // A tie: the predicted first object (large red triangle) shares red with the truth's first and large
  // with its second: 1 against 1, so the same layout decides: relation right. Only the first red matches.
  check_score(w, t, "a large red triangle left of a small green cross", true, false, 0, 1, 0, 1);
  // Shapes and colours exchanged, sizes kept: sizes right; the predicted first object (small blue
  // square) is closer to the truth's second (blue, square: 2) than to its first (small: 1): relation wrong.
  check_score(w, t, "a small blue square left of a large red circle", true, false, 0, 0, 2, 0);
  // A truth scene the world cannot hold is refused.
  CHECK_THROWS_AS(sy::score_caption(w, {sy::layout::horizontal, t.first, t.first}, other), value_error);

  sy::caption_tally tally(w);
  CHECK(tally.count() == 0);
  CHECK(tally.exact() == 0.0);
  CHECK(tally.attribute_accuracy() == 0.0);
  for (const std::string& c : {other, green, exchanged, vertical, stop}) tally.add(t, c);
  // Sums over the five: exact 1, ungrammatical 1, shape 2+2+0+2+0 = 6 of 10, colour 2+1+0+2+0 = 5 of 10,
  // size 6 of 10, relation 1+1+0+0+0 = 2 of 5, all slots (6+5+6+2) = 19 of 35.
  CHECK(tally.count() == 5);
  CHECK(tally.exact() == doctest::Approx(0.2));
  CHECK(tally.ungrammatical_rate() == doctest::Approx(0.2));
  CHECK(tally.shape() == doctest::Approx(0.6));
  CHECK(tally.colour() == doctest::Approx(0.5));
  CHECK(tally.size() == doctest::Approx(0.6));
  CHECK(tally.relation() == doctest::Approx(0.4));
  CHECK(tally.attribute_accuracy() == doctest::Approx(19.0 / 35.0));
}

TEST_CASE("scene_language: every question refers to exactly one object and has its attribute as answer") {
  const sy::shapes_world w;
  const std::array<std::string, 4> types{"colour", "shape", "size", "position"};
  const std::array<std::string, 4> openings{"what colour is the ", "what shape is the ", "what size is the ",
                                            "where is the "};
  std::int64_t checked = 0, by_place = 0;
  for (const sy::scene& s : all_scenes(w)) {
    const auto qs = sy::questions_about(w, s);
    REQUIRE(qs.size() == 8u);
    for (std::size_t i = 0; i < qs.size(); ++i) {
      const auto& q = qs[i];
      const int k = i < 4 ? 0 : 1;
      const std::string& type = types[i % 4];
      CAPTURE(q.text);
      REQUIRE(q.type == type);
      // The template: the opening, the expression, "?".
      const std::string& open = openings[i % 4];
      REQUIRE(q.text.size() > open.size() + 1);
      REQUIRE(q.text.compare(0, open.size(), open) == 0);
      REQUIRE(q.text.back() == '?');
      const std::string ref = q.text.substr(open.size(), q.text.size() - open.size() - 1);
      // It fits the asked object and not the other, and does not give the answer away.
      CHECK(fits(s, k, ref));
      CHECK_FALSE(fits(s, 1 - k, ref));
      CHECK_FALSE(names_kind(ref, type));
      by_place += names_kind(ref, "position");
      CHECK(q.answer == answer_for(s, k, type));
      checked += fits(s, k, ref) && !fits(s, 1 - k, ref) && !names_kind(ref, type) &&
                 q.answer == answer_for(s, k, type);
    }
  }
  CHECK(checked == 8 * 4512);
  // Referring by place happens exactly when the objects differ only in the asked attribute: for each of
  // the 3 attributes, 2 layouts x (ordered pairs differing only there) x 2 objects.
  // colour: 4 shapes x 2 sizes x 6 x 5 = 240 pairs; shape: 6 colours x 2 sizes x 4 x 3 = 144; size: 4 x 6 x 2 = 48.
  CHECK(by_place == 2 * (240 + 144 + 48) * 2);
  CHECK(sy::vqa_prompt("what colour is the circle?") == "Question: what colour is the circle? Short answer:");
  CHECK_THROWS_AS(sy::questions_about(w, {sy::layout::vertical, {sy::diamond, 0, 0}, {0, 0, 0}}), value_error);
}

TEST_CASE("scene_language: three scenes' questions, written out by hand") {
  const sy::shapes_world w;
  using Q = std::vector<std::array<std::string, 3>>;  // type, text, answer
  auto as_rows = [](const std::vector<sy::scene_question>& qs) {
    Q rows;
    for (const auto& q : qs) rows.push_back({q.type, q.text, q.answer});
    return rows;
  };
  // Different in everything: the shape alone picks an object out ("red shape" for shape questions).
  CHECK(as_rows(sy::questions_about(w, red_circle_left_of_blue_square)) ==
        Q{{"colour", "what colour is the circle?", "red"},
          {"shape", "what shape is the red shape?", "circle"},
          {"size", "what size is the circle?", "small"},
          {"position", "where is the circle?", "left"},
          {"colour", "what colour is the square?", "blue"},
          {"shape", "what shape is the blue shape?", "square"},
          {"size", "what size is the square?", "large"},
          {"position", "where is the square?", "right"}});
  // Vertical, different only in colour: colour questions refer by place ("top" / "bottom").
  const sy::scene only_colour{sy::layout::vertical, {sy::triangle, sy::green, 1}, {sy::triangle, sy::yellow, 1}};
  CHECK(as_rows(sy::questions_about(w, only_colour)) ==
        Q{{"colour", "what colour is the top triangle?", "green"},
          {"shape", "what shape is the green shape?", "triangle"},
          {"size", "what size is the green triangle?", "large"},
          {"position", "where is the green triangle?", "above"},
          {"colour", "what colour is the bottom triangle?", "yellow"},
          {"shape", "what shape is the yellow shape?", "triangle"},
          {"size", "what size is the yellow triangle?", "large"},
          {"position", "where is the yellow triangle?", "below"}});
  // Horizontal, different only in shape: shape questions refer by place ("left shape").
  const sy::scene only_shape{sy::layout::horizontal, {sy::square, sy::magenta, 0}, {sy::cross, sy::magenta, 0}};
  CHECK(as_rows(sy::questions_about(w, only_shape)) ==
        Q{{"colour", "what colour is the square?", "magenta"},
          {"shape", "what shape is the left shape?", "square"},
          {"size", "what size is the square?", "small"},
          {"position", "where is the square?", "left"},
          {"colour", "what colour is the cross?", "magenta"},
          {"shape", "what shape is the right shape?", "cross"},
          {"size", "what size is the cross?", "small"},
          {"position", "where is the cross?", "right"}});
  // Same shape, different colour and size: colour questions use the size ("large circle").
  const sy::scene same_shape{sy::layout::horizontal, {sy::circle, sy::yellow, 1}, {sy::circle, sy::green, 0}};
  CHECK(as_rows(sy::questions_about(w, same_shape)) ==
        Q{{"colour", "what colour is the large circle?", "yellow"},
          {"shape", "what shape is the yellow shape?", "circle"},
          {"size", "what size is the yellow circle?", "large"},
          {"position", "where is the yellow circle?", "left"},
          {"colour", "what colour is the small circle?", "green"},
          {"shape", "what shape is the green shape?", "circle"},
          {"size", "what size is the green circle?", "small"},
          {"position", "where is the green circle?", "right"}});
}

// ---------------------------------------------------------------------------------------------------
// The frozen patch encoder
// ---------------------------------------------------------------------------------------------------
TEST_CASE("frozen_patch_encoder: shapes, determinism, a pure function of the image") {
  const sy::shapes_world w;
  host_tensor<float, 4> im({6, 32, 32, 3});
  host_tensor<std::int64_t, 2> ids({6, 12}), mask({6, 12});
  w.train_batch(1, 0, im.view(), ids.view(), mask.view());
  const frozen_patch_encoder enc;
  CHECK(enc.num_tokens() == 16);
  CHECK(enc.dim() == 128);
  const auto f = enc.encode(im);
  CHECK(f.shape() == (extents_t<3>{6, 16, 128}));
  CHECK(enc.encode(im).storage() == f.storage());
  CHECK(frozen_patch_encoder{}.encode(im).storage() == f.storage());  // same seed, same weights
  // Image 3 alone gives the same features as inside the batch.
  host_tensor<float, 4> one({1, 32, 32, 3});
  std::copy(im.storage().begin() + 3 * 32 * 32 * 3, im.storage().begin() + 4 * 32 * 32 * 3, one.storage().begin());
  const auto f1 = enc.encode(one);
  CHECK(std::equal(f1.storage().begin(), f1.storage().end(), f.storage().begin() + 3 * 16 * 128));
  // LayerNorm per group: each half of each token has mean 0 and variance 1.
  for (index_t n = 0; n < 16; ++n)
    for (index_t g = 0; g < 2; ++g) {
      double m = 0, v = 0;
      for (index_t e = 0; e < 64; ++e) m += f(0, n, g * 64 + e);
      m /= 64;
      for (index_t e = 0; e < 64; ++e) v += (f(0, n, g * 64 + e) - m) * (f(0, n, g * 64 + e) - m);
      CHECK(std::fabs(m) < 1e-4);
      CHECK(v / 64 == doctest::Approx(1.0).epsilon(1e-3));
    }
  // Another seed, another encoder; the global token adds one token; the pixels mode works too.
  patch_encoder_config c;
  c.seed = 99;
  CHECK(frozen_patch_encoder{c}.encode(im).storage() != f.storage());
  c.global_token = true;
  CHECK(frozen_patch_encoder{c}.encode(im).shape() == (extents_t<3>{6, 17, 128}));
  c.features = patch_features::pixels;
  c.dim = 64;
  const auto fp = frozen_patch_encoder{c}.encode(im);
  CHECK(fp.shape() == (extents_t<3>{6, 17, 64}));
  for (float v : fp.storage()) REQUIRE(std::isfinite(v));
  host_tensor<float, 3> wrong({6, 16, 64});
  CHECK_THROWS_AS(enc.encode(im.view(), wrong.view()), shape_error);
  patch_encoder_config bad;
  bad.patch = 5;
  CHECK_THROWS_AS(frozen_patch_encoder{bad}, value_error);
}

TEST_CASE("frozen_patch_encoder: scenes differing in one colour give different features, where that object is") {
  const sy::shapes_world w;
  const frozen_patch_encoder enc;
  auto features = [&](const sy::scene& s) {
    host_tensor<float, 4> im({1, 32, 32, 3});
    const auto img = w.render(s, 11, 5);  // the same seed and index: the same jitter
    std::copy(img.storage().begin(), img.storage().end(), im.storage().begin());
    return enc.encode(im);
  };
  sy::scene a = red_circle_left_of_blue_square;
  sy::scene b = a;
  b.first.colour = sy::green;  // only the left object changes colour
  const auto fa = features(a), fb = features(b);
  // Tokens of the left half (patch columns 0-1) differ, those of the right half are identical.
  double left_diff = 0, right_diff = 0;
  for (index_t n = 0; n < 16; ++n)
    for (index_t e = 0; e < 128; ++e) {
      const double d = std::fabs(fa(0, n, e) - fb(0, n, e));
      (n % 4 < 2 ? left_diff : right_diff) += d;
    }
  CHECK(left_diff > 10.0);
  CHECK(right_diff == 0.0);
  // The colour swap of a scene (a blue circle left of a red square): different features everywhere
  // an object is.
  const auto fs = features(sy::shapes_world::colour_swap(a));
  double l = 0, r = 0;
  for (index_t n = 0; n < 16; ++n)
    for (index_t e = 0; e < 128; ++e) (n % 4 < 2 ? l : r) += std::fabs(fa(0, n, e) - fs(0, n, e));
  CHECK(l > 10.0);
  CHECK(r > 10.0);
  // And a shape change alone (same colours) too, in the colour-free "form" half of the tokens.
  sy::scene c = a;
  c.first.shape = sy::triangle;
  const auto fc = features(c);
  double form = 0;
  for (index_t n = 0; n < 16; ++n)
    for (index_t e = 0; e < 64; ++e) form += std::fabs(fa(0, n, e) - fc(0, n, e));
  CHECK(form > 10.0);
}

// ---------------------------------------------------------------------------------------------------
// Retrieval metrics
// ---------------------------------------------------------------------------------------------------
TEST_CASE("retrieval: a perfect matrix, the reversed one, and ties") {
  const index_t N = 20;
  const auto gt = retrieval_ground_truth::one_to_one(N);
  host_tensor<float, 2> sim({N, N});
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < N; ++j) sim(i, j) = i == j ? 1.0f : 0.1f * static_cast<float>((i * 7 + j * 3) % 5);
  auto r = retrieval_recall(sim.view(), gt);
  CHECK(r.t2i.r1 == 1.0);
  CHECK(r.i2t.r1 == 1.0);
  CHECK(r.i2t.r10 == 1.0);
  CHECK(r.t2i.mean_rank == 1.0);
  CHECK(r.r_mean() == 1.0);
  CHECK(r.t2i.queries == N);
  CHECK(r.t2i.chance1 == doctest::Approx(1.0 / N));
  CHECK(r.t2i.chance5 == doctest::Approx(5.0 / N));
  // Reversed: the ground truth scores lowest, so it ranks last.
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < N; ++j) sim(i, j) = i == j ? -1.0f : static_cast<float>(i + j);
  r = retrieval_recall(sim.view(), gt);
  CHECK(r.t2i.r10 == 0.0);
  CHECK(r.i2t.r10 == 0.0);
  CHECK(r.t2i.mean_rank == N);
  for (index_t q = 0; q < N; ++q) CHECK(r.i2t.ranks[static_cast<std::size_t>(q)] == N - 1);
  // Ties: a constant matrix ranks candidate 0 first for every query, so query j finds its match at rank j.
  sim.fill(0.5f);
  r = retrieval_recall(sim.view(), gt);
  for (index_t q = 0; q < N; ++q) CHECK(r.t2i.ranks[static_cast<std::size_t>(q)] == q);
  CHECK(r.t2i.r1 == doctest::Approx(1.0 / N));
  CHECK(r.t2i.r5 == doctest::Approx(5.0 / N));
  CHECK(r.i2t.r10 == doctest::Approx(10.0 / N));
  // NaN ranks below every number, -inf included; among themselves NaN and -inf tie by index.
  sim.fill(0.0f);
  sim(3, 3) = std::numeric_limits<float>::quiet_NaN();
  sim(3, 0) = -std::numeric_limits<float>::infinity();
  r = retrieval_recall(sim.view(), gt);
  CHECK(r.i2t.ranks[3] == N - 1);  // image 3: text 0 (-inf) and text 3 (NaN) tie, lower index first
  CHECK(r.t2i.ranks[3] == N - 1);
  // Another ground truth (text j describes image j + 1), and a transposed (strided) view of the matrix.
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < N; ++j) sim(i, j) = static_cast<float>((i * 13 + j * 7) % 11) + (i == (j + 1) % N ? 20.f : 0.f);
  std::vector<index_t> next(static_cast<std::size_t>(N)), prev(static_cast<std::size_t>(N));
  for (index_t j = 0; j < N; ++j) {
    next[static_cast<std::size_t>(j)] = (j + 1) % N;
    prev[static_cast<std::size_t>(j)] = (j + N - 1) % N;
  }
  r = retrieval_recall(sim.view(), retrieval_ground_truth::from_text_to_image(next, N));
  CHECK(r.t2i.r1 == 1.0);
  CHECK(r.i2t.r1 == 1.0);
  const tensor_view<const float, 2> transposed(sim.data(), {N, N}, {1, N});  // (texts, images) now
  r = retrieval_recall(transposed, retrieval_ground_truth::from_text_to_image(prev, N));
  CHECK(r.t2i.r1 == 1.0);
  CHECK(r.i2t.r1 == 1.0);
  host_tensor<float, 2> bad({N, N + 1});
  CHECK_THROWS_AS(retrieval_recall(bad.view(), gt), shape_error);
}

TEST_CASE("retrieval: several texts per image, and chance levels") {
  // 4 images, 8 texts: text j describes image j / 2.
  std::vector<index_t> t2i{0, 0, 1, 1, 2, 2, 3, 3};
  const auto gt = retrieval_ground_truth::from_text_to_image(t2i, 4);
  host_tensor<double, 2> sim({4, 8}, 0.0);
  // Image 0: its second text (1) is best; image 1: its texts rank 2nd and 3rd.
  sim(0, 1) = 1.0;
  sim(1, 0) = 1.0;
  sim(1, 3) = 0.9;
  sim(1, 2) = 0.8;
  const auto r = retrieval_recall(sim.view(), gt);
  CHECK(r.i2t.ranks[0] == 0);
  CHECK(r.i2t.ranks[1] == 1);
  CHECK(r.i2t.num_relevant[0] == 2);
  CHECK(r.i2t.chance1 == doctest::Approx(2.0 / 8.0));
  CHECK(chance_recall(5, 1000) == doctest::Approx(0.005));
  CHECK(chance_recall(2, 8, 2) == doctest::Approx(1.0 - (6.0 * 5.0) / (8.0 * 7.0)));
  CHECK(chance_recall(10, 5) == 1.0);
  CHECK_THROWS_AS(retrieval_ground_truth::from_text_to_image({0, 0, 1}, 3), value_error);  // image 2 has no text
}

TEST_CASE("retrieval: re-ranking the ITC top-k with a score function fixes a wrong top-1") {
  const index_t N = 12, k = 4;
  const auto gt = retrieval_ground_truth::one_to_one(N);
  host_tensor<float, 2> sim({N, N});
  // ITC puts the match second (after its neighbour j + 1) for every query, except query 5 whose match is
  // outside the top k (ITC rank 6).
  for (index_t i = 0; i < N; ++i)
    for (index_t j = 0; j < N; ++j) {
      const index_t d = (j - i + N) % N;  // 0 = the match
      sim(i, j) = d == 0 ? 0.9f : d == 1 ? 1.0f : d == N - 1 ? 1.0f : 0.5f - 0.01f * static_cast<float>(d);
    }
  for (index_t j = 0; j < N; ++j)
    if (j != 5) sim(5, j) += 1.0f;  // image 5's texts all beat the match ...
  for (index_t i = 0; i < N; ++i)
    if (i != 5) sim(i, 5) += 1.0f;  // ... and text 5's images too
  const auto itc = retrieval_recall(sim.view(), gt);
  CHECK(itc.t2i.r1 == 0.0);
  CHECK(itc.i2t.r1 == 0.0);
  // The score: 10 for the matching pair, else the ITC score (so the rest keep their order).
  index_t calls = 0;
  auto score = [&](index_t i, index_t j) {
    ++calls;
    return i == j ? 10.0 : static_cast<double>(sim(i, j));
  };
  const auto plan = plan_rerank(sim.view(), k);
  CHECK(plan.k_i2t == k);
  CHECK(plan.k_t2i == k);
  CHECK(std::is_sorted(plan.pairs.begin(), plan.pairs.end()));
  CHECK(std::adjacent_find(plan.pairs.begin(), plan.pairs.end()) == plan.pairs.end());
  CHECK(plan.image_offsets.back() == static_cast<index_t>(plan.pairs.size()));
  for (index_t i = 0; i < N; ++i)
    for (index_t r = 0; r < k; ++r)
      CHECK(plan.pair_index(i, plan.i2t[static_cast<std::size_t>(i * k + r)]) >= 0);
  CHECK(plan.pair_index(5, 5) == -1);  // outside both top-k lists
  const auto rr = rerank_recall(sim.view(), k, score, gt);
  CHECK(calls == static_cast<index_t>(plan.pairs.size()));
  // Every query but 5 now finds its match first; query 5 keeps its ITC rank.
  for (index_t q = 0; q < N; ++q) {
    CHECK(rr.t2i.ranks[static_cast<std::size_t>(q)] == (q == 5 ? itc.t2i.ranks[5] : 0));
    CHECK(rr.i2t.ranks[static_cast<std::size_t>(q)] == (q == 5 ? itc.i2t.ranks[5] : 0));
  }
  CHECK(itc.t2i.ranks[5] >= k);
  CHECK(rr.t2i.r1 == doctest::Approx(11.0 / 12.0));
  CHECK(rr.i2t.r1 == doctest::Approx(11.0 / 12.0));
  // Scores from a span give the same; re-scoring with ITC itself reproduces the ITC ranks.
  std::vector<float> s;
  for (const auto& [i, j] : plan.pairs) s.push_back(static_cast<float>(score(i, j)));
  const auto rs = rerank_recall(sim.view(), plan, std::span<const float>(s), gt);
  CHECK(rs.t2i.ranks == rr.t2i.ranks);
  CHECK(rs.i2t.ranks == rr.i2t.ranks);
  const auto same = rerank_recall(sim.view(), k, [&](index_t i, index_t j) { return sim(i, j); }, gt);
  CHECK(same.t2i.ranks == itc.t2i.ranks);
  CHECK(same.i2t.ranks == itc.i2t.ranks);
  // Ties in the new score: lower index first.
  const auto tie = rerank_recall(sim.view(), k, [](index_t, index_t) { return 1.0; }, gt);
  for (index_t q = 0; q < N; ++q) {
    if (q == 5) continue;
    // The match's rank = how many of the query's candidates have a lower index.
    index_t lower = 0;
    for (index_t r = 0; r < k; ++r) lower += plan.t2i[static_cast<std::size_t>(q * k + r)] < q;
    CHECK(tie.t2i.ranks[static_cast<std::size_t>(q)] == lower);
  }
  std::vector<double> short_scores(3);
  CHECK_THROWS_AS(rerank_recall(sim.view(), plan, std::span<const double>(short_scores), gt), shape_error);
  // k larger than N is clipped.
  CHECK(plan_rerank(sim.view(), 100).k_i2t == N);
  const std::string text = format_retrieval(rr, "ITC+ITM");
  CHECK(text.find("text->image") != std::string::npos);
  CHECK(text.find("chance") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------------
// CSV, PNG, progress
// ---------------------------------------------------------------------------------------------------
TEST_CASE("csv_log: header, one flushed row per step, locale-free numbers, read back") {
  CHECK(csv_number(1.0) == "1");
  CHECK(csv_number(-3.0) == "-3");
  CHECK(csv_number(0.1) == "0.1");
  CHECK(csv_number(1e-5) == "1e-05");
  CHECK(csv_number(2.5) == "2.5");
  CHECK(csv_number(std::nan("")) == "nan");
  CHECK(csv_number(-HUGE_VAL) == "-inf");
  const auto path = scratch_dir() / "log.csv";
  {
    auto log = csv_log::stage1(path.string());
    log.row(stage1_row{1, 2.5, 0.6931471805599453, 3.25, 6.443147180559945, 1e-5, 0.125});
    // Flushed: visible before the log is closed.
    CHECK(slurp(path) ==
          "step,loss_itc,loss_itm,loss_itg,loss_total,lr,seconds\n1,2.5,0.6931471805599453,3.25,6.443147180559945,1e-05,0.125\n");
    log.row({2, 2.0, 0.5, 3.0, 5.5, 2e-5, 0.25});
    CHECK(log.rows() == 2);
    CHECK_THROWS_AS(log.row({1.0, 2.0}), shape_error);
  }
  auto t = read_csv(path.string());
  CHECK(t.columns == stage1_columns());
  REQUIRE(t.rows.size() == 2u);
  CHECK(t.rows[0][2] == 0.6931471805599453);  // exact round trip
  CHECK(t.values("lr") == std::vector<double>{1e-5, 2e-5});
  CHECK_THROWS_AS(t.values("nope"), value_error);
  // An interrupted last row is dropped; a bad row elsewhere is an error.
  {
    std::ofstream f(path, std::ios::app);
    f << "3,1.0,0.4";
  }
  CHECK(read_csv(path.string()).rows.size() == 2u);
  {
    std::ofstream f(path, std::ios::app);
    f << "\n4,1,1,1,1,1,1\n";
  }
  CHECK_THROWS_AS(read_csv(path.string()), format_error);
  CHECK_THROWS_AS(csv_log("/nonexistent-dir/x.csv", {"a"}), error);
}

TEST_CASE("plot_png: a training plot is a PNG of the requested size with the series' colours") {
  const auto dir = scratch_dir();
  const auto csv = dir / "curves.csv";
  {
    auto log = csv_log::stage1(csv.string());
    for (int s = 1; s <= 300; ++s) {
      const double t = s / 300.0;
      log.row(stage1_row{s, 4 * std::exp(-4 * t) + 0.2, 0.7 * std::exp(-2 * t), 3 * std::exp(-3 * t) + 0.4,
                         0, s < 30 ? 1e-4 * s / 30 : 1e-4 * (1 - t), 0.1 * s});
    }
  }
  plot_options o;
  o.width = 700;
  o.height = 500;
  o.title = "stage 1";
  o.ema = 0.8;
  const auto png = dir / "curves.png";
  write_training_plot(png.string(), read_csv(csv.string()), o);
  const std::string bytes = slurp(png);
  REQUIRE(bytes.size() > 8);
  CHECK(bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  int w = 0, h = 0, c = 0;
  unsigned char* px = stbi_load(png.string().c_str(), &w, &h, &c, 3);
  REQUIRE(px != nullptr);
  CHECK(w == 700);
  CHECK(h == 500);
  CHECK(c == 3);
  // Mostly white background, and the first palette colour (loss_itc) is there.
  long white = 0, first = 0;
  for (long i = 0; i < static_cast<long>(w) * h; ++i) {
    const unsigned char* p = px + 3 * i;
    white += p[0] == 255 && p[1] == 255 && p[2] == 255;
    first += p[0] == plot_palette[0].r && p[1] == plot_palette[0].g && p[2] == plot_palette[0].b;
  }
  stbi_image_free(px);
  CHECK(white > 0.6 * w * h);
  CHECK(first > 100);
  // render_plot checks its input.
  std::vector<plot_series> bad{{"x", {1, 2}, {1}, 0}};
  CHECK_THROWS_AS(render_plot(bad, {}), shape_error);
  // Tick labels.
  CHECK(demo::detail::tick_label(200, 50) == "200");
  CHECK(demo::detail::tick_label(0.25, 0.05) == "0.25");
  CHECK(demo::detail::tick_label(1.5e-4, 5e-5) == "1.5e-4");
  CHECK(demo::detail::tick_label(2e-4, 1e-4) == "2e-4");
  CHECK(demo::detail::nice_step(0, 1000, 5) == 200);
  CHECK(text_width("ab", 2) == 22);
}

TEST_CASE("progress: plain lines off a terminal, a redrawn bar on one") {
  const auto path = scratch_dir() / "progress.txt";
  {
    std::FILE* f = std::fopen(path.string().c_str(), "w");
    REQUIRE(f != nullptr);
    progress_options o;
    o.out = f;
    o.every = 4;
    o.label = "stage1";
    progress_bar bar(10, o);
    CHECK_FALSE(bar.is_terminal());
    for (index_t s = 1; s <= 10; ++s) bar.update(s, {{"itc", 1.5}, {"itm", 0.25}}, 1e-4);
    bar.message("done");
    std::fclose(f);
  }
  std::string text = slurp(path);
  CHECK(text.find("stage1 step 1/10 (10%)  itc 1.5  itm 0.25  lr 1.00e-04") != std::string::npos);
  CHECK(text.find("step 4/10") != std::string::npos);
  CHECK(text.find("step 8/10") != std::string::npos);
  CHECK(text.find("step 10/10 (100%)") != std::string::npos);
  CHECK(text.find("step 5/10") == std::string::npos);
  CHECK(text.find("ETA") != std::string::npos);
  CHECK(text.find("\r") == std::string::npos);
  CHECK(text.substr(text.size() - 5) == "done\n");
  {
    std::FILE* f = std::fopen(path.string().c_str(), "w");
    progress_options o;
    o.out = f;
    o.mode = progress_mode::bar;
    o.width = 100;
    o.redraw_seconds = 0;
    progress_bar bar(4, o);
    CHECK(bar.is_terminal());
    for (index_t s = 1; s <= 4; ++s) bar.update(s, {{"loss", 2.0}});
    std::fclose(f);
  }
  text = slurp(path);
  CHECK(text.find("\r[") != std::string::npos);
  CHECK(text.find("\033[K") != std::string::npos);
  CHECK(text.find(" 4/4") != std::string::npos);
  CHECK(text.back() == '\n');
  CHECK(format_duration(12.34) == "12.3s");
  CHECK(format_duration(125) == "2m05s");
  CHECK(format_duration(3725) == "1h02m");
}
