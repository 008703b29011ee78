// blip2/backend/onednn/cross_entropy.hpp: softmax cross-entropy with oneDNN's softmax primitives.
//
// The heavy part is the exponentials over (R, V) (V = 30522 for ITG): oneDNN's vectorised softmax_v2
// does them, one loop per row does the rest.
//   forward:  log-softmax (softmax_log) into scratch, lp = z - lse; then per row
//             row_loss = -(1 - eps) lp[t] - eps mean_c lp[c], and lse = z[c*] - lp[c*] at the row's
//             largest lp (where the subtraction loses least)
//   backward: softmax (softmax_accurate) written straight into dlogits (into scratch when accumulating:
//             oneDNN writes, never adds), then dlogits = dloss / count (p - (1 - eps) onehot - eps / V).
//             The primitive recomputes the row max and sum, so the cached lse is not read here.
// Strided logits, zero-size shapes and double run the reference kernels.
// Dimensions: R rows, V classes.
#pragma once
#include <type_traits>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/cross_entropy.hpp"

namespace blip2 {

namespace onednn_detail {
// A softmax_v2 forward primitive over the rows of a dense (R, V) tensor.
inline dnnl::primitive& row_softmax(onednn_backend& be, std::string_view op, dnnl::algorithm alg, index_t R,
                                    index_t V) {
  const auto md = dnnl::memory::desc({R, V}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
  return be.primitive(std::string(op) + "|" + std::to_string(R) + "," + std::to_string(V), [&] {
    return build(op, [&] {
      using sm = dnnl::softmax_v2_forward;
      return dnnl::primitive(
          sm(sm::primitive_desc(sm::desc(dnnl::prop_kind::forward_inference, alg, md, md, 1), be.engine())));
    });
  });
}
}  // namespace onednn_detail

template <>
struct kernel<onednn_backend, op::cross_entropy_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 1> loss, tensor_view<T, 1> row_loss, tensor_view<T, 1> lse,
                  tensor_view<index_t, 1> count, tensor_view<const T, 2> logits, tensor_view<const index_t, 1> targets,
                  T smoothing, index_t ignore_index) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::cross_entropy_forward>::run(be, loss, row_loss, lse, count, logits, targets, smoothing,
                                                         ignore_index);  // double: reference
    } else if (!logits.is_contiguous() || logits.empty()) {
      reference_fallback<op::cross_entropy_forward>::run(be, loss, row_loss, lse, count, logits, targets, smoothing,
                                                         ignore_index);  // strided or empty: reference
    } else {
      using namespace onednn_detail;
      const index_t R = logits.extent(0), V = logits.extent(1);
      const auto md = dnnl::memory::desc({R, V}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
      auto& prim = row_softmax(be, "cross_entropy_forward", dnnl::algorithm::softmax_log, R, V);
      float* lp = be.scratch(0, R * V);  // (R, V) log-probabilities
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, md, logits.data())}, {DNNL_ARG_DST, memory_of(be, md, lp)}});
      const float* z = logits.data();
      BLIP2_OMP_FOR
      for (index_t r = 0; r < R; ++r) {
        const float* lpr = lp + r * V;
        float sum_lp = 0, best = lpr[0];
        index_t at = 0;
        for (index_t c = 0; c < V; ++c) {
          sum_lp += lpr[c];
          if (lpr[c] > best) {
            best = lpr[c];
            at = c;
          }
        }
        lse(r) = z[r * V + at] - lpr[at];
        const index_t t = targets(r);
        // row_loss = (1 - eps) (lse - z[t]) + eps mean_c (lse - z[c]) = -(1 - eps) lp[t] - eps mean_c lp[c]
        if (t == ignore_index)
          row_loss(r) = 0.0f;
        else if (smoothing == 0.0f)
          row_loss(r) = -lpr[t];
        else
          row_loss(r) = -(1.0f - smoothing) * lpr[t] - smoothing * (sum_lp / static_cast<float>(V));
      }
      detail::cross_entropy_mean<float>(loss, row_loss, targets, count, ignore_index);
    }
  }
};

template <>
struct kernel<onednn_backend, op::cross_entropy_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dlogits, tensor_view<const T, 1> dloss,
                  tensor_view<const T, 2> logits, tensor_view<const index_t, 1> targets, tensor_view<const T, 1> lse,
                  tensor_view<const index_t, 1> count, T smoothing, index_t ignore_index, grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::cross_entropy_backward>::run(be, dlogits, dloss, logits, targets, lse, count, smoothing,
                                                          ignore_index, mode);  // double: reference
    } else if (!logits.is_contiguous() || !dlogits.is_contiguous() || logits.empty()) {
      reference_fallback<op::cross_entropy_backward>::run(be, dlogits, dloss, logits, targets, lse, count, smoothing,
                                                          ignore_index, mode);  // strided or empty: reference
    } else {
      using namespace onednn_detail;
      const index_t R = logits.extent(0), V = logits.extent(1);
      const auto md = dnnl::memory::desc({R, V}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
      auto& prim = row_softmax(be, "cross_entropy_backward", dnnl::algorithm::softmax_accurate, R, V);
      const bool add = mode == grad_write::accumulate;
      float* dz = dlogits.data();
      float* p = add ? be.scratch(0, R * V) : dz;  // (R, V) probabilities
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, md, logits.data())}, {DNNL_ARG_DST, memory_of(be, md, p)}});
      // forward: loss = sum_r row_loss[r] / count; drow_loss[r] = dloss / count for counted rows
      const float g = count(0) > 0 ? dloss(0) / static_cast<float>(count(0)) : 0.0f;
      const float off = smoothing / static_cast<float>(V);
      const float on = 1.0f - smoothing;
      BLIP2_OMP_FOR
      for (index_t r = 0; r < R; ++r) {
        const index_t t = targets(r);
        float* dzr = dz + r * V;
        const float* pr = p + r * V;
        if (t == ignore_index) {
          // forward: row_loss[r] = 0 (ignored); no gradient
          if (!add)
            for (index_t c = 0; c < V; ++c) dzr[c] = 0.0f;
          continue;
        }
        // forward: row_loss = lse - sum_c q[c] z[c], q = (1 - eps) onehot(t) + eps / V;
        // dz[c] = drow_loss (softmax[c] - q[c])
        for (index_t c = 0; c < V; ++c) {
          const float grad = g * (pr[c] - off);
          dzr[c] = add ? dzr[c] + grad : grad;
        }
        dzr[t] -= g * on;
      }
    }
  }
};

}  // namespace blip2
