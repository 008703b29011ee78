// blip2/backend/onednn/attention.hpp: attention from oneDNN batched matmuls and softmax_v2.
//
// q, k, v, out (B, T, C) are seen as (B, NH, T, HS) head views (strides only, no copies); oneDNN's
// matmul takes the two batch dimensions directly:
//   forward:  probs = q_h k_h^T (alpha 1/sqrt(HS))  -> mask added by a loop that asks the policy
//             -> softmax_v2 in place -> dropout into scratch (when p > 0) -> out_h = dropped v_h
//   backward: ddropped = dout_h v_h^T (scratch) -> dv_h (+)= dropped^T dout_h -> dprobs = ddropped f
//             -> dscores = softmax backward (softmax_backward_rows, scratch) -> dq_h (+)= alpha dscores k_h,
//             dk_h (+)= alpha dscores^T q_h (beta 1 accumulates)
// With several OpenMP threads the forward runs by head instead (forward_by_head): one parallel region,
// each thread taking whole (b, h) heads through the same steps with its own single-threaded primitives.
// Small heads run fused_attention.hpp's one pass per head instead (the backend's attention() setting
// decides). probs must be dense (it is the cache the caller allocates); otherwise, and for double, the
// reference kernel runs. Dimensions: B batch, NH heads, T queries, S keys, HS head size.
#pragma once
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "blip2/backend/onednn/fused_attention.hpp"
#include "blip2/backend/onednn/matmul.hpp"
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/onednn/softmax.hpp"
#include "blip2/backend/reference/attention.hpp"

namespace blip2 {
namespace onednn_detail {

template <class Mask>
inline constexpr bool always_allowed = std::is_same_v<Mask, bidirectional>;

// Whether oneDNN can describe every one of these views (no zero or negative strides in a matrix).
template <class... Views>
bool operands_fit(const Views&... v) {
  return (matmul_operand_fits(v) && ...);
}

// Whether this call runs fused_attention.hpp's kernel: as the backend's setting says, where it fits.
template <class... Views>
bool run_fused(const onednn_backend& be, index_t T, index_t S, index_t HS, const Views&... v) {
  using k = onednn_backend::attention_kernels;
  if (be.attention() == k::primitives || !fused_attention_fits(v...)) return false;
  return be.attention() == k::fused || be.attention() == k::fused_baseline || fused_attention_preferred(T, S, HS);
}

}  // namespace onednn_detail

template <>
struct kernel<onednn_backend, op::attention_forward> {
  // The same forward with one parallel region: each thread takes whole (b, h) heads and runs, with its
  // own single-threaded primitives, scores = q_h k_h^T / sqrt(HS) (+ mask) -> softmax -> (dropout) ->
  // out_h = dropped v_h on them, the head's (T, S) probabilities staying in its cache between the
  // steps. (The batched path below forks and joins the threads once per step, and sends all of probs
  // through memory between them.)
  template <class Mask>
  static void forward_by_head(onednn_backend& be, tensor_view<float, 3> out, tensor_view<float, 4> probs,
                              tensor_view<const float, 3> q, tensor_view<const float, 3> k,
                              tensor_view<const float, 3> v, index_t NH, const Mask& mask,
                              tensor_view<const float, 2> key_padding, double dropout_p, std::uint64_t seed,
                              int threads) {
    using namespace onednn_detail;
    const index_t B = q.extent(0), T_ = q.extent(1), S = k.extent(1), HS = q.extent(2) / NH, heads = B * NH;
    const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
    // head (b, h) of a (B, X, C) view: (X, HS), channels [h HS, (h + 1) HS)
    auto head = [&](const auto& x, index_t b, index_t h) {
      using V = std::remove_cvref_t<decltype(x)>;
      return tensor_view<typename V::element_type, 2>(x.data() + b * x.stride(0) + h * HS * x.stride(2),
                                                      {x.extent(1), HS}, {x.stride(1), x.stride(2)});
    };
    auto probs_of = [&](float* base, index_t i) { return tensor_view<float, 2>(base + i * T_ * S, {T_, S}); };
    float* dropped = dropout_p > 0.0 ? be.scratch(0, heads * T_ * S) : probs.data();
    // every head has the same shapes and strides: one set of primitives per thread, made here
    const dnnl::memory::desc rows_md({T_, S}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
    std::vector<matmul_call> score_calls, out_calls;
    std::vector<dnnl::primitive*> softmaxes;
    for (int t = 0; t < threads; ++t) {
      score_calls.push_back(matmul_primitive<2>(be, probs_of(probs.data(), 0), head(q, 0, 0), transpose(head(k, 0, 0)),
                                                scale, 0.0f, false, 1, t + 1));
      out_calls.push_back(matmul_primitive<2>(be, head(out, 0, 0), detail::as_const(probs_of(dropped, 0)),
                                              head(v, 0, 0), 1.0f, 0.0f, false, 1, t + 1));
      softmaxes.push_back(&softmax_forward_primitive(be, rows_md, rows_key(T_, S) + "|worker" + std::to_string(t + 1)));
    }
    be.prepare_workers(threads);
    run_workers(threads, [&](int t, int nt) {
      auto& st = be.worker_stream(t);
      const auto& sc = score_calls[static_cast<std::size_t>(t)];
      const auto& oc = out_calls[static_cast<std::size_t>(t)];
      for (index_t i = heads * t / nt; i < heads * (t + 1) / nt; ++i) {
        const index_t b = i / NH, h = i % NH;
        float* p = probs.data() + i * T_ * S;  // (T, S) of head (b, h)
        // scores = q_h k_h^T / sqrt(HS)
        sc.prim->execute(st, matmul_args(be, sc, head(q, b, h).data(), head(k, b, h).data(), p, nullptr));
        st.wait();
        // + mask(b, t, s)
        if (!always_allowed<Mask> || key_padding.data())
          for (index_t r = 0; r < T_; ++r)
            for (index_t s = 0; s < S; ++s) p[r * S + s] += additive_mask<float>(mask, key_padding, b, r, s);
        // probs = softmax(scores), in place
        softmaxes[static_cast<std::size_t>(t)]->execute(
            st, {{DNNL_ARG_SRC, memory_of(be, rows_md, p)}, {DNNL_ARG_DST, memory_of(be, rows_md, p)}});
        st.wait();
        // dropped = probs f (f from the element's row-major index into (B, NH, T, S))
        float* d = p;
        if (dropout_p > 0.0) {
          d = dropped + i * T_ * S;
          for (index_t e = 0; e < T_ * S; ++e)
            d[e] = p[e] * detail::attention_dropout_factor<float>(seed, static_cast<std::uint64_t>(i * T_ * S + e), dropout_p);
        }
        // out_h = dropped v_h
        oc.prim->execute(st, matmul_args(be, oc, d, head(v, b, h).data(), head(out, b, h).data(), nullptr));
        st.wait();
      }
    });
  }

  template <class T, class Mask>
  static void run(onednn_backend& be, tensor_view<T, 3> out, tensor_view<T, 4> probs, tensor_view<const T, 3> q,
                  tensor_view<const T, 3> k, tensor_view<const T, 3> v, index_t num_heads, const Mask& mask,
                  tensor_view<const T, 2> key_padding, double dropout_p, std::uint64_t seed) {
    using ref = reference_fallback<op::attention_forward>;
    if constexpr (!std::is_same_v<T, float>) {
      ref::run(be, out, probs, q, k, v, num_heads, mask, key_padding, dropout_p, seed);  // double: reference
    } else {
      using namespace onednn_detail;
      const index_t NH = num_heads;
      const auto qh = detail::head_view(q, NH);    // (B, NH, T, HS)
      const auto kh = detail::head_view(k, NH);    // (B, NH, S, HS)
      const auto vh = detail::head_view(v, NH);    // (B, NH, S, HS)
      const auto oh = detail::head_view(out, NH);  // (B, NH, T, HS)
      if (!probs.is_contiguous() || !operands_fit(qh, kh, vh, oh)) {
        // a strided probs cache, or zero/negative strides in q, k, v, out: no oneDNN path
        ref::run(be, out, probs, q, k, v, num_heads, mask, key_padding, dropout_p, seed);
        return;
      }
      const index_t B = q.extent(0), T_ = q.extent(1), S = k.extent(1), HS = q.extent(2) / NH;
      const index_t rows = B * NH * T_, n = rows * S;
      if (n == 0) {
        if (out.size() > 0) ref::run(be, out, probs, q, k, v, num_heads, mask, key_padding, dropout_p, seed);
        return;  // S == 0 (or nothing at all): no oneDNN shape; the reference writes the zeros
      }
      if (run_fused(be, T_, S, HS, out, q, k, v)) {
        fused_attention_forward(out, probs, q, k, v, NH, mask, key_padding, dropout_p, seed,
                                be.attention() != onednn_backend::attention_kernels::fused_baseline);
        return;
      }
      const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
      const int threads = be.split_threads();
      if (threads > 1 && B * NH >= threads) {
        forward_by_head(be, out, probs, q, k, v, NH, mask, key_padding, dropout_p, seed, threads);
        return;
      }
      // scores (B, NH, T, S) = q_h (B, NH, T, HS) @ k_h^T (B, NH, HS, S) / sqrt(HS), into probs
      run_matmul<4>(be, probs, qh, transpose(kh), scale, 0.0f);
      // scores += mask(b, t, s), asked of the policy and the padding element by element
      if (!always_allowed<Mask> || key_padding.data()) {
        BLIP2_OMP_FOR
        for (index_t row = 0; row < rows; ++row) {
          const index_t b = row / (NH * T_), t = row % T_;
          float* p = probs.data() + row * S;
          for (index_t s = 0; s < S; ++s) p[s] += additive_mask<float>(mask, key_padding, b, t, s);
        }
      }
      // probs = softmax(scores) over the S keys, in place
      const dnnl::memory::desc rows_md({rows, S}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
      auto& sm = softmax_forward_primitive(be, rows_md, rows_key(rows, S));
      be.execute(sm, {{DNNL_ARG_SRC, memory_of(be, rows_md, probs.data())},
                      {DNNL_ARG_DST, memory_of(be, rows_md, probs.data())}});
      // dropped = probs * f (scratch; probs itself when p == 0)
      const float* dropped = probs.data();
      if (dropout_p > 0.0) {
        float* d = be.scratch(0, n);
        BLIP2_OMP_FOR
        for (index_t i = 0; i < n; ++i)
          d[i] = probs.data()[i] * detail::attention_dropout_factor<float>(seed, static_cast<std::uint64_t>(i), dropout_p);
        dropped = d;
      }
      // out_h (B, NH, T, HS) = dropped (B, NH, T, S) @ v_h (B, NH, S, HS)
      run_matmul<4>(be, oh, tensor_view<const float, 4>(dropped, probs.extents()), vh, 1.0f, 0.0f);
    }
  }
};

template <>
struct kernel<onednn_backend, op::attention_backward> {
  template <class T, class Mask>
  static void run(onednn_backend& be, tensor_view<T, 3> dq, tensor_view<T, 3> dk, tensor_view<T, 3> dv,
                  tensor_view<const T, 3> dout, tensor_view<const T, 3> q, tensor_view<const T, 3> k,
                  tensor_view<const T, 3> v, tensor_view<const T, 4> probs, index_t num_heads, const Mask& mask,
                  tensor_view<const T, 2> key_padding, double dropout_p, std::uint64_t seed, grad_write mode) {
    using ref = reference_fallback<op::attention_backward>;
    if constexpr (!std::is_same_v<T, float>) {
      ref::run(be, dq, dk, dv, dout, q, k, v, probs, num_heads, mask, key_padding, dropout_p, seed, mode);  // double
    } else {
      using namespace onednn_detail;
      const index_t NH = num_heads;
      const auto qh = detail::head_view(q, NH), doh = detail::head_view(dout, NH);  // (B, NH, T, HS)
      const auto kh = detail::head_view(k, NH), vh = detail::head_view(v, NH);      // (B, NH, S, HS)
      const auto dqh = detail::head_view(dq, NH);                                   // (B, NH, T, HS)
      const auto dkh = detail::head_view(dk, NH), dvh = detail::head_view(dv, NH);  // (B, NH, S, HS)
      const index_t B = q.extent(0), T_ = q.extent(1), S = k.extent(1), HS = q.extent(2) / NH;
      const index_t rows = B * NH * T_, n = rows * S;
      if (!probs.is_contiguous() || !operands_fit(qh, kh, vh, doh, dqh, dkh, dvh) || n == 0) {
        // a strided probs cache, zero/negative strides, or S == 0 / T == 0: no oneDNN path
        ref::run(be, dq, dk, dv, dout, q, k, v, probs, num_heads, mask, key_padding, dropout_p, seed, mode);
        return;
      }
      if (run_fused(be, T_, S, HS, dq, dk, dv, dout, q, k, v)) {
        fused_attention_backward(dq, dk, dv, dout, q, k, v, probs, NH, dropout_p, seed, mode,
                                 be.attention() != onednn_backend::attention_kernels::fused_baseline);
        return;
      }
      const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
      const float beta = mode == grad_write::accumulate ? 1.0f : 0.0f;
      const extents_t<4> pe = probs.extents();  // (B, NH, T, S)
      // forward: out_h = dropped v_h, dropped = probs f
      //   ddropped (B, NH, T, S) = dout_h (B, NH, T, HS) @ v_h^T (B, NH, HS, S)
      float* dprobs = be.scratch(0, n);
      run_matmul<4>(be, tensor_view<float, 4>(dprobs, pe), doh, transpose(vh), 1.0f, 0.0f);
      //   dv_h (B, NH, S, HS) (+)= dropped^T (B, NH, S, T) @ dout_h (B, NH, T, HS)
      const float* dropped = probs.data();
      float* work = be.scratch(1, n);
      if (dropout_p > 0.0) {
        BLIP2_OMP_FOR
        for (index_t i = 0; i < n; ++i) {
          const float f = detail::attention_dropout_factor<float>(seed, static_cast<std::uint64_t>(i), dropout_p);
          work[i] = probs.data()[i] * f;
          dprobs[i] *= f;  // dprobs = ddropped f
        }
        dropped = work;
      }
      run_matmul<4>(be, dvh, transpose(tensor_view<const float, 4>(dropped, pe)), doh, 1.0f, beta);
      // forward: probs = softmax(scores): dscores = probs (dprobs - rowsum(probs dprobs)), into work
      softmax_backward_rows(work, probs.data(), dprobs, rows, S, false);
      const tensor_view<const float, 4> dscores(work, pe);  // (B, NH, T, S)
      // forward: scores = q_h k_h^T / sqrt(HS) + mask
      //   dq_h (B, NH, T, HS) (+)= dscores (B, NH, T, S) @ k_h (B, NH, S, HS) / sqrt(HS)
      run_matmul<4>(be, dqh, dscores, kh, scale, beta);
      //   dk_h (B, NH, S, HS) (+)= dscores^T (B, NH, S, T) @ q_h (B, NH, T, HS) / sqrt(HS)
      run_matmul<4>(be, dkh, transpose(dscores), qh, scale, beta);
    }
  }
};

}  // namespace blip2
