// blip2/eval/retrieval.hpp: image-text retrieval metrics (R@K both ways) and BLIP-2's evaluation
// protocol, ITC top-k candidates re-ranked by a second score (mean ITM logit + ITC in LAVIS).
//
// Dimensions: Ni images, Nt texts, k candidates per query.
//
// A similarity matrix S (Ni, Nt) (any strides, float or double) ranks texts for each image (row i:
// image->text) and images for each text (column j: text->image). The ground truth says which image each
// text describes (text_to_image) and, the other way, which texts belong to each image (image_to_texts;
// one each in a one-to-one set, five in COCO).
//
// Ranks are 0-based. A query's rank is that of its best-ranked ground-truth candidate; R@K is the
// fraction of queries with rank < K. ORDER AND TIES: candidates are sorted by score, higher first; equal
// scores go in index order (the lower index first); NaN counts as lower than every number (-inf), and
// NaNs and -infs tie among themselves by index. So a constant matrix ranks candidate 0 first for every
// query, and a result never depends on the sort algorithm or the thread count.
//
// Re-ranking (LAVIS `compute_sim_matrix`): for each query, the k candidates with the highest ITC score
// (same order and ties as above) are re-scored with score(i, j) (image i, text j), sorted by the new
// score (ties: lower index first, NaN last) and placed first; every other candidate follows in ITC order.
// A ground truth outside the top k therefore keeps its ITC rank (>= k): R@K for K <= k depends only on
// the new scores. plan_rerank() lists the distinct (image, text) pairs both directions need, grouped by
// image (so a caller can compute an image's ITM inputs once and score its texts in a batch); the
// callable form of rerank_recall() calls score once per distinct pair, in that order.
//
// Chance: the expected R@K of a uniformly random ranking, 1 - C(N - m, K) / C(N, K) for a query with m
// ground-truth candidates among N (K / N when m = 1), averaged over the queries.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

struct retrieval_ground_truth {
  std::vector<index_t> text_to_image;                // (Nt): the image text j describes
  std::vector<std::vector<index_t>> image_to_texts;  // (Ni): the texts of image i (at least one each)

  index_t num_images() const { return static_cast<index_t>(image_to_texts.size()); }
  index_t num_texts() const { return static_cast<index_t>(text_to_image.size()); }

  // Text j describes image j.
  static retrieval_ground_truth one_to_one(index_t n) {
    BLIP2_CHECK(n >= 1, value_error, "retrieval_ground_truth::one_to_one: n = ", n, " < 1");
    std::vector<index_t> t2i(static_cast<std::size_t>(n));
    std::iota(t2i.begin(), t2i.end(), index_t{0});
    return from_text_to_image(std::move(t2i), n);
  }
  // Text j describes image t2i[j]; every image needs at least one text.
  static retrieval_ground_truth from_text_to_image(std::vector<index_t> t2i, index_t num_images) {
    retrieval_ground_truth g;
    g.image_to_texts.resize(static_cast<std::size_t>(num_images));
    for (std::size_t j = 0; j < t2i.size(); ++j) {
      BLIP2_CHECK(t2i[j] >= 0 && t2i[j] < num_images, value_error, "retrieval_ground_truth: text ", j,
                  " names image ", t2i[j], " outside [0, ", num_images, ")");
      g.image_to_texts[static_cast<std::size_t>(t2i[j])].push_back(static_cast<index_t>(j));
    }
    for (index_t i = 0; i < num_images; ++i)
      BLIP2_CHECK(!g.image_to_texts[static_cast<std::size_t>(i)].empty(), value_error,
                  "retrieval_ground_truth: image ", i, " has no text");
    g.text_to_image = std::move(t2i);
    return g;
  }
};

// R@K of one direction.
struct recall_at_k {
  index_t queries = 0, candidates = 0;
  double r1 = 0, r5 = 0, r10 = 0;                  // fractions in [0, 1]
  double chance1 = 0, chance5 = 0, chance10 = 0;   // the same for a random ranking
  double mean_rank = 0;                            // 1-based, averaged over the queries
  std::vector<index_t> ranks;                      // (queries): 0-based rank of the best ground truth
  std::vector<index_t> num_relevant;               // (queries): ground-truth candidates of each query

  double recall(index_t k) const {
    if (ranks.empty()) return 0.0;
    index_t hit = 0;
    for (index_t r : ranks) hit += r < k;
    return static_cast<double>(hit) / static_cast<double>(ranks.size());
  }
  double chance(index_t k) const;
};

struct retrieval_result {
  recall_at_k t2i;  // text -> image: queries are texts, candidates images
  recall_at_k i2t;  // image -> text: queries are images, candidates texts
  double r_mean() const { return (t2i.r1 + t2i.r5 + t2i.r10 + i2t.r1 + i2t.r5 + i2t.r10) / 6.0; }
};

// Expected R@K of a random ranking for a query with `relevant` ground truths among `candidates`.
inline double chance_recall(index_t k, index_t candidates, index_t relevant = 1) {
  BLIP2_CHECK(candidates >= 1 && relevant >= 1 && relevant <= candidates && k >= 0, value_error,
              "chance_recall: k = ", k, ", candidates = ", candidates, ", relevant = ", relevant);
  if (k >= candidates) return 1.0;
  double miss = 1.0;  // C(N - m, k) / C(N, k) = prod_{i<k} (N - m - i) / (N - i)
  for (index_t i = 0; i < k; ++i) {
    const double num = static_cast<double>(candidates - relevant - i);
    if (num <= 0) return 1.0;
    miss *= num / static_cast<double>(candidates - i);
  }
  return 1.0 - miss;
}

inline double recall_at_k::chance(index_t k) const {
  if (num_relevant.empty()) return 0.0;
  double s = 0;
  for (index_t m : num_relevant) s += chance_recall(k, candidates, m);
  return s / static_cast<double>(num_relevant.size());
}

namespace detail {
// The ranking key: NaN -> -inf.
inline double rank_key(double s) { return std::isnan(s) ? -std::numeric_limits<double>::infinity() : s; }
// True when candidate (a, ia) is ranked before (b, ib).
inline bool ranks_before(double a, index_t ia, double b, index_t ib) {
  const double ka = rank_key(a), kb = rank_key(b);
  return ka > kb || (ka == kb && ia < ib);
}
// 0-based rank of candidate c among n, score(x) giving candidate x's score.
template <class Score>
index_t rank_of(index_t c, index_t n, Score&& score) {
  const double sc = static_cast<double>(score(c));
  index_t r = 0;
  for (index_t x = 0; x < n; ++x) r += x != c && ranks_before(static_cast<double>(score(x)), x, sc, c);
  return r;
}
// The best min(k, n) candidates, best first.
template <class Score>
std::vector<index_t> top_k(index_t k, index_t n, Score&& score) {
  std::vector<index_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), index_t{0});
  std::vector<double> s(static_cast<std::size_t>(n));
  for (index_t x = 0; x < n; ++x) s[static_cast<std::size_t>(x)] = static_cast<double>(score(x));
  const auto kk = static_cast<std::ptrdiff_t>(std::min(k, n));
  std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](index_t a, index_t b) {
    return ranks_before(s[static_cast<std::size_t>(a)], a, s[static_cast<std::size_t>(b)], b);
  });
  idx.resize(static_cast<std::size_t>(kk));
  return idx;
}
template <class T>
void check_sim(std::string_view op, const tensor_view<const T, 2>& sim, const retrieval_ground_truth& gt) {
  BLIP2_CHECK(sim.extent(0) == gt.num_images() && sim.extent(1) == gt.num_texts(), shape_error, op,
              ": similarity matrix ", shape_string(sim), " but the ground truth has ", gt.num_images(), " images and ",
              gt.num_texts(), " texts");
  BLIP2_CHECK(sim.extent(0) >= 1 && sim.extent(1) >= 1, shape_error, op, ": empty similarity matrix ",
              shape_string(sim));
}
// Fills the summary fields of r from r.ranks and r.num_relevant.
inline void summarize(recall_at_k& r) {
  r.queries = static_cast<index_t>(r.ranks.size());
  r.r1 = r.recall(1);
  r.r5 = r.recall(5);
  r.r10 = r.recall(10);
  r.chance1 = r.chance(1);
  r.chance5 = r.chance(5);
  r.chance10 = r.chance(10);
  double s = 0;
  for (index_t x : r.ranks) s += static_cast<double>(x + 1);
  r.mean_rank = r.ranks.empty() ? 0.0 : s / static_cast<double>(r.ranks.size());
}
}  // namespace detail

// R@1/5/10 both ways from a similarity matrix sim (Ni, Nt). O(Ni Nt (1 + texts per image)).
template <class T>
retrieval_result retrieval_recall(tensor_view<const T, 2> sim, const retrieval_ground_truth& gt) {
  detail::check_sim("retrieval_recall", sim, gt);
  const index_t Ni = sim.extent(0), Nt = sim.extent(1);
  retrieval_result res;
  res.t2i.candidates = Ni;
  res.i2t.candidates = Nt;
  res.t2i.ranks.resize(static_cast<std::size_t>(Nt));
  res.t2i.num_relevant.assign(static_cast<std::size_t>(Nt), 1);
  res.i2t.ranks.resize(static_cast<std::size_t>(Ni));
  res.i2t.num_relevant.resize(static_cast<std::size_t>(Ni));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t j = 0; j < Nt; ++j)
    res.t2i.ranks[static_cast<std::size_t>(j)] =
        detail::rank_of(gt.text_to_image[static_cast<std::size_t>(j)], Ni, [&](index_t i) { return sim(i, j); });
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t i = 0; i < Ni; ++i) {
    const auto& texts = gt.image_to_texts[static_cast<std::size_t>(i)];
    index_t best = Nt;
    for (index_t j : texts) best = std::min(best, detail::rank_of(j, Nt, [&](index_t x) { return sim(i, x); }));
    res.i2t.ranks[static_cast<std::size_t>(i)] = best;
    res.i2t.num_relevant[static_cast<std::size_t>(i)] = static_cast<index_t>(texts.size());
  }
  detail::summarize(res.t2i);
  detail::summarize(res.i2t);
  return res;
}
template <class T>
retrieval_result retrieval_recall(tensor_view<T, 2> sim, const retrieval_ground_truth& gt)
  requires(!std::is_const_v<T>)
{
  return retrieval_recall(tensor_view<const T, 2>(sim), gt);
}

// ---------------------------------------------------------------------------------------------------
// Re-ranking
// ---------------------------------------------------------------------------------------------------
struct rerank_plan {
  index_t num_images = 0, num_texts = 0;
  index_t k_i2t = 0, k_t2i = 0;        // candidates per image query (min(k, Nt)), per text query (min(k, Ni))
  std::vector<index_t> i2t;            // (Ni, k_i2t): each image's top texts by ITC, best first
  std::vector<index_t> t2i;            // (Nt, k_t2i): each text's top images by ITC, best first
  std::vector<std::pair<index_t, index_t>> pairs;  // distinct (image, text) pairs to score, sorted
  std::vector<index_t> image_offsets;  // (Ni + 1): image i's pairs are [image_offsets[i], image_offsets[i + 1])

  // The position of (image, text) in pairs; -1 if absent.
  index_t pair_index(index_t image, index_t text) const {
    const auto b = pairs.begin() + image_offsets[static_cast<std::size_t>(image)];
    const auto e = pairs.begin() + image_offsets[static_cast<std::size_t>(image) + 1];
    const auto it = std::lower_bound(b, e, std::pair<index_t, index_t>{image, text});
    return it != e && it->second == text ? static_cast<index_t>(it - pairs.begin()) : -1;
  }
};

// The ITC top-k candidates of every query both ways, and the distinct pairs to score.
template <class T>
rerank_plan plan_rerank(tensor_view<const T, 2> sim, index_t k) {
  const index_t Ni = sim.extent(0), Nt = sim.extent(1);
  BLIP2_CHECK(Ni >= 1 && Nt >= 1 && k >= 1, value_error, "plan_rerank: k = ", k, " with similarity matrix ",
              shape_string(sim));
  rerank_plan p;
  p.num_images = Ni;
  p.num_texts = Nt;
  p.k_i2t = std::min(k, Nt);
  p.k_t2i = std::min(k, Ni);
  p.i2t.resize(static_cast<std::size_t>(Ni * p.k_i2t));
  p.t2i.resize(static_cast<std::size_t>(Nt * p.k_t2i));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t i = 0; i < Ni; ++i) {
    const auto top = detail::top_k(k, Nt, [&](index_t x) { return sim(i, x); });
    std::copy(top.begin(), top.end(), p.i2t.begin() + i * p.k_i2t);
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t j = 0; j < Nt; ++j) {
    const auto top = detail::top_k(k, Ni, [&](index_t x) { return sim(x, j); });
    std::copy(top.begin(), top.end(), p.t2i.begin() + j * p.k_t2i);
  }
  p.pairs.reserve(p.i2t.size() + p.t2i.size());
  for (index_t i = 0; i < Ni; ++i)
    for (index_t r = 0; r < p.k_i2t; ++r) p.pairs.emplace_back(i, p.i2t[static_cast<std::size_t>(i * p.k_i2t + r)]);
  for (index_t j = 0; j < Nt; ++j)
    for (index_t r = 0; r < p.k_t2i; ++r) p.pairs.emplace_back(p.t2i[static_cast<std::size_t>(j * p.k_t2i + r)], j);
  std::sort(p.pairs.begin(), p.pairs.end());
  p.pairs.erase(std::unique(p.pairs.begin(), p.pairs.end()), p.pairs.end());
  p.image_offsets.assign(static_cast<std::size_t>(Ni + 1), 0);
  for (const auto& pr : p.pairs) ++p.image_offsets[static_cast<std::size_t>(pr.first + 1)];
  for (index_t i = 0; i < Ni; ++i) p.image_offsets[static_cast<std::size_t>(i + 1)] += p.image_offsets[static_cast<std::size_t>(i)];
  return p;
}
template <class T>
rerank_plan plan_rerank(tensor_view<T, 2> sim, index_t k)
  requires(!std::is_const_v<T>)
{
  return plan_rerank(tensor_view<const T, 2>(sim), k);
}

// R@K after re-ranking: pair_scores[q] is the new score of plan.pairs[q].
template <class T, class S>
retrieval_result rerank_recall(tensor_view<const T, 2> sim, const rerank_plan& plan, std::span<const S> pair_scores,
                               const retrieval_ground_truth& gt) {
  detail::check_sim("rerank_recall", sim, gt);
  BLIP2_CHECK(plan.num_images == sim.extent(0) && plan.num_texts == sim.extent(1), shape_error,
              "rerank_recall: the plan is for ", plan.num_images, " x ", plan.num_texts, " but the similarity matrix is ",
              shape_string(sim));
  BLIP2_CHECK(pair_scores.size() == plan.pairs.size(), shape_error, "rerank_recall: ", pair_scores.size(),
              " scores for ", plan.pairs.size(), " pairs");
  const index_t Ni = plan.num_images, Nt = plan.num_texts;
  // Rank of ground truth g for one query: its position among the re-scored candidates if it is one,
  // else its ITC rank.
  auto rank_in = [&](std::span<const index_t> cands, auto&& new_score, index_t g, auto&& itc_rank) -> index_t {
    const auto it = std::find(cands.begin(), cands.end(), g);
    if (it == cands.end()) return itc_rank();
    const double sg = static_cast<double>(new_score(g));
    index_t r = 0;
    for (index_t c : cands) r += c != g && detail::ranks_before(static_cast<double>(new_score(c)), c, sg, g);
    return r;
  };
  retrieval_result res;
  res.t2i.candidates = Ni;
  res.i2t.candidates = Nt;
  res.t2i.ranks.resize(static_cast<std::size_t>(Nt));
  res.t2i.num_relevant.assign(static_cast<std::size_t>(Nt), 1);
  res.i2t.ranks.resize(static_cast<std::size_t>(Ni));
  res.i2t.num_relevant.resize(static_cast<std::size_t>(Ni));
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t j = 0; j < Nt; ++j) {
    const std::span<const index_t> cands(plan.t2i.data() + j * plan.k_t2i, static_cast<std::size_t>(plan.k_t2i));
    const index_t g = gt.text_to_image[static_cast<std::size_t>(j)];
    res.t2i.ranks[static_cast<std::size_t>(j)] = rank_in(
        cands, [&](index_t i) { return pair_scores[static_cast<std::size_t>(plan.pair_index(i, j))]; }, g,
        [&] { return detail::rank_of(g, Ni, [&](index_t x) { return sim(x, j); }); });
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 16)
#endif
  for (index_t i = 0; i < Ni; ++i) {
    const std::span<const index_t> cands(plan.i2t.data() + i * plan.k_i2t, static_cast<std::size_t>(plan.k_i2t));
    const auto& texts = gt.image_to_texts[static_cast<std::size_t>(i)];
    index_t best = Nt;
    for (index_t g : texts)
      best = std::min(best, rank_in(
                                cands, [&](index_t j) { return pair_scores[static_cast<std::size_t>(plan.pair_index(i, j))]; },
                                g, [&] { return detail::rank_of(g, Nt, [&](index_t x) { return sim(i, x); }); }));
    res.i2t.ranks[static_cast<std::size_t>(i)] = best;
    res.i2t.num_relevant[static_cast<std::size_t>(i)] = static_cast<index_t>(texts.size());
  }
  detail::summarize(res.t2i);
  detail::summarize(res.i2t);
  return res;
}

template <class T, class S>
  requires(!std::is_const_v<T>)
retrieval_result rerank_recall(tensor_view<T, 2> sim, const rerank_plan& plan, std::span<const S> pair_scores,
                               const retrieval_ground_truth& gt) {
  return rerank_recall(tensor_view<const T, 2>(sim), plan, pair_scores, gt);
}

// The same with a callable: score(image, text) -> a number, called once per distinct pair, in plan order
// (image-major, then text), on the calling thread.
template <class T, class ScoreFn>
  requires std::is_invocable_v<ScoreFn&, index_t, index_t>
retrieval_result rerank_recall(tensor_view<const T, 2> sim, index_t k, ScoreFn&& score,
                               const retrieval_ground_truth& gt) {
  detail::check_sim("rerank_recall", sim, gt);
  const rerank_plan plan = plan_rerank(sim, k);
  std::vector<double> s;
  s.reserve(plan.pairs.size());
  for (const auto& [i, j] : plan.pairs) s.push_back(static_cast<double>(score(i, j)));
  return rerank_recall(sim, plan, std::span<const double>(s), gt);
}
template <class T, class ScoreFn>
  requires(!std::is_const_v<T> && std::is_invocable_v<ScoreFn&, index_t, index_t>)
retrieval_result rerank_recall(tensor_view<T, 2> sim, index_t k, ScoreFn&& score, const retrieval_ground_truth& gt) {
  return rerank_recall(tensor_view<const T, 2>(sim), k, std::forward<ScoreFn>(score), gt);
}

// Two lines, in percent, with chance and the mean rank, e.g.
//   ITC  text->image  R@1  93.40  R@5  99.20  R@10  99.90   chance  0.10  0.50  1.00   mean rank 1.1
inline std::string format_retrieval(const retrieval_result& r, std::string_view label) {
  std::string out;
  char line[256];
  for (int d = 0; d < 2; ++d) {
    const recall_at_k& x = d == 0 ? r.t2i : r.i2t;
    std::snprintf(line, sizeof line,
                  "%.*s  %s  R@1 %6.2f  R@5 %6.2f  R@10 %6.2f   chance %5.2f %5.2f %5.2f   mean rank %.1f  (%lld x %lld)\n",
                  static_cast<int>(label.size()), label.data(), d == 0 ? "text->image" : "image->text", 100 * x.r1,
                  100 * x.r5, 100 * x.r10, 100 * x.chance1, 100 * x.chance5, 100 * x.chance10, x.mean_rank,
                  static_cast<long long>(x.queries), static_cast<long long>(x.candidates));
    out += line;
  }
  return out;
}

}  // namespace blip2
