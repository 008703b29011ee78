// blip2/eval/vqa_accuracy.hpp: VQA accuracy by exact match, overall and per question type, for question
// sets with one right answer (or a few equally right ones) per question, such as the synthetic world's
// questions about colour, shape, size and relative position.
//
// An answer is right when normalize_answer(predicted) equals normalize_answer(expected) (or one of the
// accepted answers): ASCII letters lowercased, leading and trailing whitespace removed, every run of
// whitespace inside collapsed to one space. Nothing else is changed: punctuation, articles and number
// words count ("red." is not "red").
// Overall accuracy is over questions (a micro average: correct / questions), not the mean of the
// per-type accuracies. Question types are free strings; by_type() lists them in alphabetical order.
//
// NOT the VQA v2 evaluation (vqaEval.py): that one also strips punctuation and articles, maps number
// words to digits, and scores min(1, #humans who gave the answer / 3) against ten human answers.
#pragma once
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "blip2/core/tensor_view.hpp"

namespace blip2 {

// ASCII-lowercased, trimmed, inner whitespace runs collapsed to one space.
inline std::string normalize_answer(std::string_view answer) {
  auto space = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'; };
  std::string out;
  out.reserve(answer.size());
  bool gap = false;
  for (char ch : answer) {
    if (space(ch)) {
      gap = !out.empty();
      continue;
    }
    if (gap) out += ' ';
    gap = false;
    out += (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
  }
  return out;
}

inline bool answer_matches(std::string_view predicted, std::string_view expected) {
  return normalize_answer(predicted) == normalize_answer(expected);
}

// Questions asked and answered right.
struct vqa_count {
  index_t questions = 0, correct = 0;
  double accuracy() const { return questions ? static_cast<double>(correct) / static_cast<double>(questions) : 0.0; }
};

// The running tally of a VQA evaluation.
class vqa_accuracy {
 public:
  // Scores one answer to a question of type question_type; returns whether it was right.
  bool add(std::string_view question_type, std::string_view predicted, std::string_view expected) {
    return record(question_type, answer_matches(predicted, expected));
  }
  // The same with several accepted answers (right when it matches any of them).
  bool add(std::string_view question_type, std::string_view predicted, std::span<const std::string> accepted) {
    const std::string p = normalize_answer(predicted);
    bool right = false;
    for (const std::string& a : accepted) right = right || p == normalize_answer(a);
    return record(question_type, right);
  }

  const vqa_count& overall() const { return overall_; }
  const std::map<std::string, vqa_count, std::less<>>& by_type() const { return by_type_; }
  // Accuracy over all questions; of one type (0 for a type never asked).
  double accuracy() const { return overall_.accuracy(); }
  double accuracy(std::string_view question_type) const {
    const auto it = by_type_.find(question_type);
    return it == by_type_.end() ? 0.0 : it->second.accuracy();
  }

 private:
  bool record(std::string_view question_type, bool right) {
    auto it = by_type_.find(question_type);
    if (it == by_type_.end()) it = by_type_.emplace(std::string(question_type), vqa_count{}).first;
    for (vqa_count* c : {&overall_, &it->second}) {
      ++c->questions;
      c->correct += right;
    }
    return right;
  }

  vqa_count overall_;
  std::map<std::string, vqa_count, std::less<>> by_type_;
};

}  // namespace blip2
