// blip2/eval/bleu.hpp: BLEU-1..4 of a captioned corpus as the COCO caption evaluation computes it
// (pycocoevalcap's Bleu(4): bleu/bleu_scorer.py, compute_score(option='closest')).
//
// Dimensions: I images, c candidate length, r reference length (in tokens), n = 1..4.
//
// Every caption is tokenized by coco_caption_tokens() (eval/caption_ngrams.hpp: what pycocoevalcap's PTB
// tokenizer does to lowercase captions). Then, for each image i:
//   guess_n(i)   = max(0, c_i - n + 1)                             the candidate's n-grams
//   correct_n(i) = sum over the candidate's distinct n-grams g of
//                  min(count of g in the candidate, max over the references of the count of g in one)
//                                                                   (clipping: a word repeated more often
//                                                                    than any one reference has it counts
//                                                                    only that often)
//   r_i          = the length of the reference closest to c_i; a tie goes to the SHORTER reference
// The corpus score sums the counts over the images first (it is not a mean of sentence scores):
//   p_n    = (sum_i correct_n(i) + 1e-15) / (sum_i guess_n(i) + 1e-9)     pycocoevalcap's tiny and small
//   BLEU-N = (p_1 p_2 ... p_N)^(1/N) * BP
//   BP     = exp(1 - 1 / ratio) when ratio = (c + 1e-15) / (r + 1e-9) < 1, else 1;  c = sum c_i, r = sum r_i
// so BP is exp(1 - r/c) for a corpus shorter than its references, up to the smoothing terms.
// CONSEQUENCES of the smoothing, kept because the COCO numbers have them:
//   - a corpus with no matching 4-gram does not get BLEU-4 = 0 but (p_1 p_2 p_3 1e-15 / guess_4)^(1/4),
//     about 1e-4; a corpus whose candidates are all shorter than 4 tokens has p_4 = 1e-15/1e-9 = 1e-6;
//   - a candidate identical to its reference scores 1 - O(1e-10), not exactly 1 (and BP itself is
//     exp(1 - 1/ratio) with ratio = (c + 1e-15) / (c + 1e-9) just below 1).
// per_image holds the sentence scores (the same formulas on one image's counts; pycocoevalcap's second
// return value).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/eval/caption_ngrams.hpp"

namespace blip2 {

struct bleu_result {
  std::array<double, caption_max_n> score{};           // BLEU-1..4 of the corpus (score[3] is BLEU-4)
  std::array<index_t, caption_max_n> correct{};        // sum_i correct_n(i): clipped n-gram matches
  std::array<index_t, caption_max_n> guess{};          // sum_i guess_n(i): the candidates' n-grams
  index_t candidate_length = 0;                        // c = sum_i c_i
  index_t reference_length = 0;                        // r = sum_i r_i (closest rule)
  double brevity_penalty = 1.0;                        // the factor BP above
  std::vector<std::array<double, caption_max_n>> per_image;  // (I): sentence BLEU-1..4 of each image

  double bleu4() const { return score[caption_max_n - 1]; }
};

namespace detail {
// BLEU-1..N and BP from summed counts, in pycocoevalcap's order of operations.
inline std::array<double, caption_max_n> bleu_from_counts(const std::array<index_t, caption_max_n>& correct,
                                                          const std::array<index_t, caption_max_n>& guess,
                                                          index_t c, index_t r, double* brevity_penalty = nullptr) {
  constexpr double tiny = 1e-15, small = 1e-9;
  std::array<double, caption_max_n> b{};
  double product = 1.0;
  for (std::size_t k = 0; k < b.size(); ++k) {
    product *= (static_cast<double>(correct[k]) + tiny) / (static_cast<double>(guess[k]) + small);
    b[k] = std::pow(product, 1.0 / static_cast<double>(k + 1));
  }
  const double ratio = (static_cast<double>(c) + tiny) / (static_cast<double>(r) + small);
  const double bp = ratio < 1.0 ? std::exp(1.0 - 1.0 / ratio) : 1.0;
  if (ratio < 1.0)
    for (double& x : b) x *= bp;
  if (brevity_penalty) *brevity_penalty = bp;
  return b;
}
}  // namespace detail

// BLEU of corpus (I images, each a candidate and at least one reference). Throws value_error on an empty
// corpus or an image without references (pycocoevalcap asserts both).
inline bleu_result bleu_score(std::span<const caption_example> corpus) {
  BLIP2_CHECK(!corpus.empty(), value_error, "bleu_score: the corpus has no image");
  bleu_result res;
  res.per_image.reserve(corpus.size());
  for (std::size_t i = 0; i < corpus.size(); ++i) {
    const caption_example& ex = corpus[i];
    BLIP2_CHECK(!ex.references.empty(), value_error, "bleu_score: image ", i, " has no reference caption");
    const caption_ngrams cand = count_ngrams(ex.candidate);
    const index_t c = cand.words;
    // The most times each n-gram occurs in one reference, and the reference length closest to c.
    std::array<std::map<std::string, index_t, std::less<>>, caption_max_n> max_ref;
    index_t r = -1;
    for (const std::string& ref : ex.references) {
      const caption_ngrams rg = count_ngrams(ref);
      for (std::size_t k = 0; k < max_ref.size(); ++k)
        for (const auto& [gram, count] : rg.counts[k]) {
          index_t& m = max_ref[k][gram];
          m = std::max(m, count);
        }
      const index_t l = rg.words;
      const index_t dl = l > c ? l - c : c - l, dr = r > c ? r - c : c - r;
      if (r < 0 || dl < dr || (dl == dr && l < r)) r = l;
    }
    std::array<index_t, caption_max_n> correct{}, guess{};
    for (std::size_t k = 0; k < correct.size(); ++k) {
      guess[k] = std::max<index_t>(0, c - static_cast<index_t>(k));
      for (const auto& [gram, count] : cand.counts[k]) {
        const auto it = max_ref[k].find(gram);
        if (it != max_ref[k].end()) correct[k] += std::min(count, it->second);
      }
      res.correct[k] += correct[k];
      res.guess[k] += guess[k];
    }
    res.candidate_length += c;
    res.reference_length += r;
    res.per_image.push_back(detail::bleu_from_counts(correct, guess, c, r));
  }
  res.score = detail::bleu_from_counts(res.correct, res.guess, res.candidate_length, res.reference_length,
                                       &res.brevity_penalty);
  return res;
}

}  // namespace blip2
