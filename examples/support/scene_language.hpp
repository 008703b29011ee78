// examples/support/scene_language.hpp: the language of the synthetic shapes world (synthetic_shapes.hpp),
// for a demo that trains a language model to caption held-out scenes and to answer questions about them.
// It holds the grammar of the captions (to tell a generated caption that means a scene from one that does
// not), the scoring of a generated caption against the true scene, and the questions a scene answers.
//
// ---- Captions ---------------------------------------------------------------------------------------
// The grammar is exactly what shapes_world::caption_text can produce for the world's config:
//   caption  = object " left of " object | object " right of " object      (horizontal layout)
//            | object " above " object   | object " below " object         (vertical layout)
//   object   = "a " size " " colour " " shape
//   size     = "small" | "large"
//   colour   = the first config.num_colours of colour_names
//   shape    = the first config.num_shapes of shape_names
// and the two objects must differ (a scene never holds two identical objects). "X left of Y" and
// "X above Y" name the first (left / top) object first; "X right of Y" and "X below Y" name the second
// first. Leading and trailing ASCII whitespace is ignored; inside, words are separated by exactly one
// space. Anything else is not a caption: an unknown word, a colour or shape outside the config (e.g.
// "white" when num_colours = 6), a missing or extra word, punctuation, capitals, "left a", "above of".
// Every scene has exactly two captions (its two mentions), and they always differ.
//
// ---- Scoring a generated caption against the true scene -------------------------------------------
// A caption that does not parse scores 0 on everything (grammatical = false). Otherwise, with p the
// scene it parses to and t the truth:
//   exact     p == t (either of t's two captions is exact)
//   shape     [p.first.shape == t.first.shape] + [p.second.shape == t.second.shape]      0..2
//   colour    the same, slot by slot (first = left / top against first)                   0..2
//   size      the same                                                                     0..2
//   relation  1 iff p's layout == t's layout and p.first shares at least as many attributes
//             with t.first as with t.second (so a caption that puts the objects in each other's
//             place gets the relation wrong; on a tie the layout alone decides)           0..1
// caption_tally sums these over captions: shape(), colour() and size() are over 2 objects a caption,
// relation() over 1, attribute_accuracy() over the 7 slots (2 + 2 + 2 + 1); exact() and
// ungrammatical_rate() are fractions of captions. An empty tally reports 0 for every rate.
//
// ---- Questions --------------------------------------------------------------------------------------
// questions_about(scene) gives 8 questions: for the first object, then the second, one of each type in
// the order colour, shape, size, position:
//   colour    "what colour is the {ref}?"   answer: the colour's name ("red")
//   shape     "what shape is the {ref}?"    answer: the shape's name ("circle")
//   size      "what size is the {ref}?"     answer: "small" or "large"
//   position  "where is the {ref}?"         answer: where the object is relative to the other one:
//                                            "left" / "right" (horizontal), "above" / "below" (vertical)
// {ref} picks out exactly that object of the scene without naming the attribute asked about (otherwise
// the question would give its own answer away). It is the first of these candidates that matches only
// that object and does not use the asked attribute:
//   colour, size, position questions:  "{shape}", "{colour} {shape}", "{size} {shape}", "{size} {colour} {shape}"
//   shape questions (noun "shape"):    "{colour} shape", "{size} shape", "{size} {colour} shape"
// When none qualifies (the two objects differ only in the asked attribute), a colour, shape or size
// question refers by position: "{place} {shape}" ("{place} shape" for shape questions), with place
// "left" / "right" (horizontal) or "top" / "bottom" (vertical). A position question never refers by
// position; it never needs to, since two different objects differ in some attribute. (With two objects
// the three-word candidates are never the first unique one; they keep the rule whole for larger scenes.)
// Answers are one lowercase word. The question words ("what", "is", "the", "where", "colour", "shape",
// "size", "top", "bottom", "?") are not in the caption vocabulary: the demo's tokenizer must cover them.
// vqa_prompt(q) wraps a question in LAVIS's OPT VQA prompt: "Question: {q} Short answer:".
//
// Demo support, not part of the installed library (namespace blip2::demo): examples/ is on the include
// path of the programs that use it, #include "support/scene_language.hpp".
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/core/errors.hpp"
#include "synthetic_shapes.hpp"  // the same directory: found whatever the include path

namespace blip2::demo::synthetic {

namespace language_detail {
// A scene the world can produce: attributes inside the config, two different objects. The functions
// that take a truth scene check it, since a scene from another config would score or ask nonsense.
inline bool valid_object(const shapes_world& w, const object& o) {
  return o.shape >= 0 && o.shape < w.config().num_shapes && o.colour >= 0 && o.colour < w.config().num_colours &&
         o.size >= 0 && o.size < static_cast<int>(size_names.size());
}
inline void check_scene(const shapes_world& w, const scene& s, const char* op) {
  BLIP2_CHECK(s.arrangement == layout::horizontal || s.arrangement == layout::vertical, value_error, op,
              ": the scene's layout ", static_cast<int>(s.arrangement), " is neither horizontal nor vertical");
  BLIP2_CHECK(valid_object(w, s.first) && valid_object(w, s.second), value_error, op,
              ": the scene has an attribute outside the world's ", w.config().num_shapes, " shapes x ",
              w.config().num_colours, " colours x 2 sizes");
  BLIP2_CHECK(s.first != s.second, value_error, op, ": the scene's two objects are identical");
}

// Index of word among the first `limit` names, or -1.
template <std::size_t N>
int find_name(const std::array<std::string_view, N>& names, int limit, std::string_view word) {
  for (int i = 0; i < limit; ++i)
    if (names[static_cast<std::size_t>(i)] == word) return i;
  return -1;
}

inline bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}
// Words separated by single spaces; nullopt on an empty text or an empty word (two spaces in a row),
// so that only the exact spacing caption_text writes is accepted.
inline std::optional<std::vector<std::string_view>> split_words(std::string_view s) {
  std::vector<std::string_view> words;
  while (true) {
    const auto space = s.find(' ');
    const auto word = s.substr(0, space);
    if (word.empty()) return std::nullopt;
    words.push_back(word);
    if (space == std::string_view::npos) return words;
    s.remove_prefix(space + 1);
  }
}

// "a {size} {colour} {shape}" at words[at..at+4), with attributes inside the config.
inline std::optional<object> parse_object(const shapes_world& w, const std::vector<std::string_view>& words,
                                          std::size_t at) {
  if (at + 4 > words.size() || words[at] != "a") return std::nullopt;
  const object o{find_name(shape_names, w.config().num_shapes, words[at + 3]),
                 find_name(colour_names, w.config().num_colours, words[at + 2]),
                 find_name(size_names, static_cast<int>(size_names.size()), words[at + 1])};
  if (o.shape < 0 || o.colour < 0 || o.size < 0) return std::nullopt;
  return o;
}

// Attributes two objects share, 0..3.
inline int shared_attributes(const object& a, const object& b) {
  return (a.shape == b.shape) + (a.colour == b.colour) + (a.size == b.size);
}
}  // namespace language_detail

// ---------------------------------------------------------------------------------------------------
// Captions
// ---------------------------------------------------------------------------------------------------
// The scene's two captions: first named first, then second named first.
inline std::vector<std::string> valid_captions(const shapes_world& world, const scene& s) {
  language_detail::check_scene(world, s, "scene_language::valid_captions");
  return {world.caption_text(s, mention::first_first), world.caption_text(s, mention::second_first)};
}

// The scene a caption describes, or nullopt if the text is not a caption of this world (see the grammar
// in the header comment). parse_caption(w, w.caption_text(s, m)) == s for every scene and mention.
inline std::optional<scene> parse_caption(const shapes_world& world, std::string_view text) {
  using namespace language_detail;
  const auto words = split_words(trim(text));
  if (!words) return std::nullopt;
  const auto named_first = parse_object(world, *words, 0);
  if (!named_first || words->size() < 5) return std::nullopt;
  // The relation: which layout, whether the first-named object is first (left / top), and where the
  // second object phrase starts ("left" and "right" take "of", "above" and "below" do not).
  const std::string_view rel = (*words)[4];
  const bool horizontal = rel == "left" || rel == "right";
  if (!horizontal && rel != "above" && rel != "below") return std::nullopt;
  const bool first_named_first = rel == "left" || rel == "above";
  std::size_t next = 5;
  if (horizontal) {
    if (words->size() < 6 || (*words)[5] != "of") return std::nullopt;
    next = 6;
  }
  const auto named_second = parse_object(world, *words, next);
  if (!named_second || words->size() != next + 4) return std::nullopt;
  if (*named_first == *named_second) return std::nullopt;  // caption_text never names one object twice
  scene s;
  s.arrangement = horizontal ? layout::horizontal : layout::vertical;
  s.first = first_named_first ? *named_first : *named_second;
  s.second = first_named_first ? *named_second : *named_first;
  return s;
}

// ---------------------------------------------------------------------------------------------------
// Scoring a generated caption
// ---------------------------------------------------------------------------------------------------
struct caption_score {
  bool grammatical = false, exact = false;
  int shape = 0, colour = 0, size = 0;  // objects right, 0..2, slot by slot
  int relation = 0;                     // 0 or 1
};

// How much of the truth a predicted caption gets right (see the header comment for the rule).
inline caption_score score_caption(const shapes_world& world, const scene& truth, std::string_view predicted) {
  language_detail::check_scene(world, truth, "scene_language::score_caption");
  caption_score r;
  const auto p = parse_caption(world, predicted);
  if (!p) return r;
  r.grammatical = true;
  r.exact = *p == truth;
  r.shape = (p->first.shape == truth.first.shape) + (p->second.shape == truth.second.shape);
  r.colour = (p->first.colour == truth.first.colour) + (p->second.colour == truth.second.colour);
  r.size = (p->first.size == truth.first.size) + (p->second.size == truth.second.size);
  // The relation is right when the predicted first object stands for the truth's first object, not for
  // the object the truth puts on the other side; comparing whole objects rather than one attribute lets
  // a caption with a wrong colour still get the relation right.
  const bool not_exchanged = language_detail::shared_attributes(p->first, truth.first) >=
                             language_detail::shared_attributes(p->first, truth.second);
  r.relation = (p->arrangement == truth.arrangement && not_exchanged) ? 1 : 0;
  return r;
}

// Sums caption scores over an evaluation set. It keeps a pointer to the world: the world must outlive it.
class caption_tally {
 public:
  explicit caption_tally(const shapes_world& world) : world_(&world) {}

  caption_score add(const scene& truth, std::string_view predicted) {
    const caption_score s = score_caption(*world_, truth, predicted);
    ++count_;
    exact_ += s.exact;
    ungrammatical_ += !s.grammatical;
    shape_ += s.shape;
    colour_ += s.colour;
    size_ += s.size;
    relation_ += s.relation;
    return s;
  }

  std::int64_t count() const { return count_; }
  double exact() const { return rate(exact_, 1); }
  double ungrammatical_rate() const { return rate(ungrammatical_, 1); }
  double shape() const { return rate(shape_, 2); }
  double colour() const { return rate(colour_, 2); }
  double size() const { return rate(size_, 2); }
  double relation() const { return rate(relation_, 1); }
  double attribute_accuracy() const { return rate(shape_ + colour_ + size_ + relation_, 7); }

 private:
  // sum over (slots per caption x captions); 0 before any caption so a report can print an empty tally.
  double rate(std::int64_t sum, int slots) const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum) / (static_cast<double>(slots) * static_cast<double>(count_));
  }

  const shapes_world* world_;
  std::int64_t count_ = 0, exact_ = 0, ungrammatical_ = 0;
  std::int64_t shape_ = 0, colour_ = 0, size_ = 0, relation_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Questions
// ---------------------------------------------------------------------------------------------------
struct scene_question {
  std::string type;    // "colour", "shape", "size" or "position"
  std::string text;    // e.g. "what colour is the circle?"
  std::string answer;  // one lowercase word, e.g. "red"
};

inline constexpr std::array<std::string_view, 4> question_types{"colour", "shape", "size", "position"};

namespace language_detail {
// The words of a referring expression, built from the object's attributes.
inline std::string shape_word(const object& o) {
  return std::string(shape_names[static_cast<std::size_t>(o.shape)]);
}
inline std::string colour_word(const object& o) {
  return std::string(colour_names[static_cast<std::size_t>(o.colour)]);
}
inline std::string size_word(const object& o) {
  return std::string(size_names[static_cast<std::size_t>(o.size)]);
}

// A candidate description: which attributes it names (the noun is the shape, or the word "shape").
struct description {
  bool size, colour, shape;
};
// Whether `other` also fits the description of `target`, i.e. the description does not single target out.
inline bool also_fits(const description& d, const object& target, const object& other) {
  return (!d.size || other.size == target.size) && (!d.colour || other.colour == target.colour) &&
         (!d.shape || other.shape == target.shape);
}
inline std::string spell(const description& d, const object& o) {
  std::string s;
  if (d.size) s += size_word(o) + " ";
  if (d.colour) s += colour_word(o) + " ";
  s += d.shape ? shape_word(o) : std::string("shape");
  return s;
}

// The referring expression for object `second ? s.second : s.first` in a question of `type`.
inline std::string referring_expression(const scene& s, bool second, std::string_view type) {
  const object& target = second ? s.second : s.first;
  const object& other = second ? s.first : s.second;
  const bool asks_shape = type == "shape";
  // In the order of the header comment: nouns first, attributes added as needed.
  static constexpr std::array<description, 4> nouns{{{false, false, true}, {false, true, true},
                                                     {true, false, true}, {true, true, true}}};
  static constexpr std::array<description, 3> shape_nouns{{{false, true, false}, {true, false, false},
                                                           {true, true, false}}};
  auto uses_asked = [&](const description& d) {
    return (type == "colour" && d.colour) || (type == "size" && d.size);  // shape questions use shape_nouns
  };
  auto first_unique = [&](const auto& candidates) -> std::optional<std::string> {
    for (const description& d : candidates)
      if (!uses_asked(d) && !also_fits(d, target, other)) return spell(d, target);
    return std::nullopt;
  };
  if (const auto ref = asks_shape ? first_unique(shape_nouns) : first_unique(nouns)) return *ref;
  // Only the asked attribute tells the objects apart: say where the object is instead.
  BLIP2_CHECK(type != "position", value_error, "scene_language: no referring expression for a position question "
              "(the scene's two objects are identical)");
  const bool hz = s.arrangement == layout::horizontal;
  const std::string place = hz ? (second ? "right" : "left") : (second ? "bottom" : "top");
  return place + " " + (asks_shape ? std::string("shape") : shape_word(target));
}

inline std::string position_answer(const scene& s, bool second) {
  if (s.arrangement == layout::horizontal) return second ? "right" : "left";
  return second ? "below" : "above";
}
}  // namespace language_detail

// The scene's 8 questions: for the first object then the second, one each of colour, shape, size and
// position, with their one-word answers (templates and the referring rule in the header comment).
inline std::vector<scene_question> questions_about(const shapes_world& world, const scene& s) {
  using namespace language_detail;
  check_scene(world, s, "scene_language::questions_about");
  std::vector<scene_question> qs;
  for (const bool second : {false, true}) {
    const object& o = second ? s.second : s.first;
    qs.push_back({"colour", "what colour is the " + referring_expression(s, second, "colour") + "?", colour_word(o)});
    qs.push_back({"shape", "what shape is the " + referring_expression(s, second, "shape") + "?", shape_word(o)});
    qs.push_back({"size", "what size is the " + referring_expression(s, second, "size") + "?", size_word(o)});
    qs.push_back({"position", "where is the " + referring_expression(s, second, "position") + "?",
                  position_answer(s, second)});
  }
  return qs;
}

// LAVIS's VQA prompt for OPT: "Question: {question} Short answer:".
inline std::string vqa_prompt(std::string_view question) {
  return "Question: " + std::string(question) + " Short answer:";
}

}  // namespace blip2::demo::synthetic
