// blip2/eval/cider.hpp: CIDEr-D of a captioned corpus as the COCO caption evaluation computes it
// (pycocoevalcap's Cider, cider/cider_scorer.py, which is the CIDEr-D of vrama91/cider's
// ciderD_scorer.py with df_mode "corpus": clipping, a Gaussian length penalty, no stemming).
//
// Dimensions: I images, M_i references of image i, n = 1..4.
//
// Every caption is tokenized by coco_caption_tokens() (eval/caption_ngrams.hpp). Then:
//   df(g)       the number of images whose references (any of them) contain the n-gram g: document
//               frequency over the REFERENCES of the evaluated corpus (candidates never count)
//   w_s(g)      = tf_s(g) * (log(I) - log(max(1, df(g))))    the TF-IDF weight of g in caption s, tf_s(g)
//               its count in s (not divided by the length); an n-gram in no reference has idf log(I)
//   len(s)      = the number of BIGRAMS of s (pycocoevalcap counts the length on n = 2: tokens - 1, or 0
//               for a caption of one token); a difference of two such lengths is the difference of the
//               token counts whenever both captions have a token (with an empty one every cosine is 0)
//   sim_n(c, s) = [sum over the n-grams g of c of min(w_c(g), w_s(g)) * w_s(g)] / (|w_c|_n |w_s|_n)
//                 * exp(-(len(c) - len(s))^2 / (2 sigma^2)),  sigma = 6
//               with |w|_n the Euclidean norm of the order-n weights; min() is the "D" clipping (a
//               candidate repeating an n-gram gains nothing past the reference's count); when either
//               norm is 0 the sum is not divided (it is then 0: all weights are >= 0)
//   CIDEr-D(i)  = 10 * (1/4) sum_n (1/M_i) sum_s sim_n(candidate_i, reference s of image i)
//   score       = mean over the images of CIDEr-D(i)
// CONSEQUENCES, kept because the COCO numbers have them:
//   - an n-gram that every image's references contain weighs 0; in a corpus of ONE image every n-gram
//     does, so CIDEr-D is 0 for any candidate, even a perfect one: the score needs several images;
//   - a candidate identical to its only reference scores 10 * (orders n with a non-zero weight) / 4:
//     10 when each of its orders 1..4 has an n-gram that some other image's references lack, 7.5 for a
//     3-token caption (it has no 4-gram), less when its words are in every image's references;
//   - the same captions score differently in corpora of different sizes (the idf is the corpus's own).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/eval/caption_ngrams.hpp"

namespace blip2 {

struct cider_result {
  double score = 0;               // CIDEr-D of the corpus: the mean of per_image
  std::vector<double> per_image;  // (I): CIDEr-D(i) of each image
};

namespace detail {
// The TF-IDF weights of one caption, by order.
struct cider_vector {
  std::array<std::map<std::string, double, std::less<>>, caption_max_n> weight;
  std::array<double, caption_max_n> norm{};
  index_t length = 0;  // the number of bigrams
};
inline cider_vector cider_weights(const caption_ngrams& ng,
                                  const std::array<std::map<std::string, index_t, std::less<>>, caption_max_n>& df,
                                  double log_images) {
  cider_vector v;
  for (std::size_t k = 0; k < v.weight.size(); ++k) {
    double sq = 0;
    for (const auto& [gram, tf] : ng.counts[k]) {
      const auto it = df[k].find(gram);
      const double d = it == df[k].end() ? 0.0 : static_cast<double>(it->second);
      const double w = static_cast<double>(tf) * (log_images - std::log(std::max(1.0, d)));
      v.weight[k].emplace(gram, w);
      sq += w * w;
    }
    v.norm[k] = std::sqrt(sq);
  }
  for (const auto& [gram, tf] : ng.counts[1]) v.length += tf;
  return v;
}
}  // namespace detail

// CIDEr-D of corpus (I images, each a candidate and at least one reference). sigma: the length
// penalty's width (6 in CIDEr-D). Throws value_error on an empty corpus, an image without references or
// sigma <= 0.
inline cider_result cider_d(std::span<const caption_example> corpus, double sigma = 6.0) {
  BLIP2_CHECK(!corpus.empty(), value_error, "cider_d: the corpus has no image");
  BLIP2_CHECK(sigma > 0, value_error, "cider_d: sigma = ", sigma, " must be > 0");
  const std::size_t I = corpus.size();
  // The n-grams of every reference, and the document frequency over the images.
  std::vector<std::vector<caption_ngrams>> refs(I);  // (I, M_i)
  std::array<std::map<std::string, index_t, std::less<>>, caption_max_n> df;
  for (std::size_t i = 0; i < I; ++i) {
    BLIP2_CHECK(!corpus[i].references.empty(), value_error, "cider_d: image ", i, " has no reference caption");
    std::array<std::set<std::string, std::less<>>, caption_max_n> seen;  // image i's n-grams, each once
    for (const std::string& ref : corpus[i].references) {
      refs[i].push_back(count_ngrams(ref));
      for (std::size_t k = 0; k < seen.size(); ++k)
        for (const auto& [gram, tf] : refs[i].back().counts[k]) seen[k].insert(gram);
    }
    for (std::size_t k = 0; k < seen.size(); ++k)
      for (const std::string& gram : seen[k]) ++df[k][gram];
  }
  const double log_images = std::log(static_cast<double>(I));
  cider_result res;
  res.per_image.reserve(I);
  for (std::size_t i = 0; i < I; ++i) {
    const detail::cider_vector c = detail::cider_weights(count_ngrams(corpus[i].candidate), df, log_images);
    std::array<double, caption_max_n> sum{};  // sum over the references of sim_n
    for (const caption_ngrams& ref : refs[i]) {
      const detail::cider_vector s = detail::cider_weights(ref, df, log_images);
      const double delta = static_cast<double>(c.length - s.length);
      for (std::size_t k = 0; k < sum.size(); ++k) {
        double val = 0;
        for (const auto& [gram, wc] : c.weight[k]) {
          const auto it = s.weight[k].find(gram);
          if (it != s.weight[k].end()) val += std::min(wc, it->second) * it->second;
        }
        if (c.norm[k] != 0 && s.norm[k] != 0) val /= c.norm[k] * s.norm[k];
        val *= std::exp(-(delta * delta) / (2 * sigma * sigma));
        sum[k] += val;
      }
    }
    double mean = 0;
    for (double x : sum) mean += x;
    mean /= static_cast<double>(caption_max_n);
    res.per_image.push_back(mean / static_cast<double>(refs[i].size()) * 10.0);
  }
  double total = 0;
  for (double x : res.per_image) total += x;
  res.score = total / static_cast<double>(I);
  return res;
}

}  // namespace blip2
