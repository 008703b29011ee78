// examples/support/retrieval_check.hpp: the demos' zero-shot retrieval check, as BLIP-2 evaluates it:
// every image against every caption by ITC, then (optionally) the ITC top-k of each query re-ranked by the
// ITM match logit + the ITC similarity (eval/rerank_scores.hpp). Pairs are one-to-one: image k, caption k.
// Prints the recalls; returns them with the ITC similarity matrix (image x text), which stage1_demo
// analyses further.
//
// Demo support, not part of the installed library (namespace blip2::demo).
#pragma once
#include <cstdio>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "blip2/eval/rerank_scores.hpp"
#include "blip2/eval/retrieval.hpp"

namespace blip2::demo {

struct retrieval_check_result {
  retrieval_result itc;              // ranked by ITC alone
  retrieval_result final_result;     // re-ranked (the same as itc without re-ranking)
  std::string kind = "itc";          // "itc" or "itc+itm_rerank"
  host_tensor<float, 2> sim;         // (N, N): sim(i, j) = ITC similarity of image i and caption j
};

// embeds (N, Ni, E): the frozen encoder's features; ids / mask (N, T): the captions. rerank_k = 0: ITC only.
template <class Be>
retrieval_check_result retrieval_check(Be& be, const qformer_model<float>& m, tensor_view<const float, 3> embeds,
                                       tensor_view<const index_t, 2> ids, tensor_view<const index_t, 2> mask,
                                       index_t rerank_k) {
  const index_t Ne = embeds.extent(0), N = embeds.extent(1), E = embeds.extent(2);
  retrieval_check_result out;
  host_tensor<float, 3> image_feats({Ne, m.config().num_query_tokens, m.config().image_text_hidden_size});
  image_features(be, m, embeds, image_feats.view());
  const host_tensor<float, 2> text_feat = text_features(be, m, ids, mask, 250);
  out.sim = host_tensor<float, 2>({Ne, Ne});
  itc_scores(be, ::blip2::detail::as_const(image_feats.view()), ::blip2::detail::as_const(text_feat.view()), out.sim.view());
  const auto gt = retrieval_ground_truth::one_to_one(Ne);
  const auto sim = ::blip2::detail::as_const(out.sim.view());
  out.itc = out.final_result = retrieval_recall(sim, gt);
  std::printf("%s", format_retrieval(out.itc, "ITC").c_str());
  if (rerank_k > 0) {
    const auto plan = plan_rerank(sim, rerank_k);
    const auto itm = itm_match_scores(
        be, m, std::span<const std::pair<index_t, index_t>>(plan.pairs),
        [&](index_t i) { return tensor_view<const float, 2>(embeds.data() + i * N * E, {N, E}); }, ids, mask, 512);
    std::vector<float> scores(itm.size());
    for (std::size_t q = 0; q < itm.size(); ++q) {
      const auto [i, j] = plan.pairs[q];
      scores[q] = itm[q] + sim(i, j);  // BLIP-2's re-ranking score: ITM match logit + ITC similarity
    }
    out.final_result = rerank_recall(sim, plan, std::span<const float>(scores), gt);
    std::printf("%s", format_retrieval(out.final_result, "ITC top-" + std::to_string(rerank_k) + " re-ranked by ITM + ITC").c_str());
    out.kind = "itc+itm_rerank";
  }
  return out;
}

}  // namespace blip2::demo
