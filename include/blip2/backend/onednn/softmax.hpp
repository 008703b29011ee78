// blip2/backend/onednn/softmax.hpp: softmax through oneDNN's softmax_v2 primitives (axis 1 of (R, N)).
//
// forward:  a mask (or a strided input) is added into a dense scratch (a loop), which the primitive
//           reads; the primitive writes out directly (in place when out is inp and there is no mask).
// backward: a loop over rows (softmax_backward_rows: oneDNN 2.6's softmax_v2 backward is a reference
//           implementation on AVX2); it assigns or adds, and dinp may alias dout.
// out, dout and dinp of a non-dense layout run the reference kernel (one explicit line each).
// Dimensions: R rows, N entries per row.
#pragma once
#include "blip2/backend/onednn/lane_sum.hpp"
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/softmax.hpp"

namespace blip2 {
namespace onednn_detail {

// "|R,N": softmax primitives depend on the dense shape only
inline std::string rows_key(index_t R, index_t N) { return "|" + std::to_string(R) + "," + std::to_string(N); }

// softmax_v2 over axis 1 of a dense (R, N) descriptor (attention's kernels use it too)
inline dnnl::primitive& softmax_forward_primitive(onednn_backend& be, const dnnl::memory::desc& md,
                                                  const std::string& key) {
  using smf = dnnl::softmax_v2_forward;
  return be.primitive("softmax_forward" + key, [&] {
    return build("softmax_forward", [&] {
      return dnnl::primitive(smf(smf::primitive_desc(
          smf::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::softmax_accurate, md, md, 1), be.engine())));
    });
  });
}

// dx = p (dp - sum_n p dp) over each row of dense (R, N) p and dp, written into dx (or added to it when
// accumulate). A loop, not softmax_v2_backward: oneDNN 2.6 has that only as ref:any on AVX2, a slow
// scalar loop (timing in benchmarks/README.md); this one streams the rows once each. The row sum
// (lane_sum: vectorisable, the same whatever the thread count) is taken before the row
// is written, so dx may be dp itself.
inline void softmax_backward_rows(float* dx, const float* p, const float* dp, index_t R, index_t N, bool accumulate) {
  BLIP2_OMP_FOR
  for (index_t r = 0; r < R; ++r) {
    const float* pr = p + r * N;
    const float* gr = dp + r * N;
    float* xr = dx + r * N;
    const float dot = lane_sum(N, [&](index_t n) { return pr[n] * gr[n]; });
    if (accumulate)
      for (index_t n = 0; n < N; ++n) xr[n] += pr[n] * (gr[n] - dot);
    else
      for (index_t n = 0; n < N; ++n) xr[n] = pr[n] * (gr[n] - dot);
  }
}

}  // namespace onednn_detail

template <>
struct kernel<onednn_backend, op::softmax_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<const T, 2> inp,
                  tensor_view<const T, 2> mask) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::softmax_forward>::run(be, out, inp, mask);  // double: reference
    } else if (!out.is_contiguous()) {
      // softmax_v2 wants a dense destination: a strided out runs the reference kernel
      reference_fallback<op::softmax_forward>::run(be, out, inp, mask);
    } else {
      using namespace onednn_detail;
      const index_t R = inp.extent(0), N = inp.extent(1);
      if (R == 0 || N == 0) return;
      const dnnl::memory::desc md({R, N}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
      const float* src = inp.data();
      if (mask.data() || !inp.is_contiguous()) {
        // x = inp + mask, dense (R, N), in scratch
        float* x = be.scratch(0, R * N);
        BLIP2_OMP_FOR
        for (index_t r = 0; r < R; ++r)
          for (index_t n = 0; n < N; ++n) x[r * N + n] = mask.data() ? inp(r, n) + mask(r, n) : inp(r, n);
        src = x;
      }
      auto& prim = softmax_forward_primitive(be, md, rows_key(R, N));
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, md, src)}, {DNNL_ARG_DST, memory_of(be, md, out.data())}});
    }
  }
};

template <>
struct kernel<onednn_backend, op::softmax_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> out, grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::softmax_backward>::run(be, dinp, dout, out, mode);  // double: reference
    } else if (!out.is_contiguous() || !dout.is_contiguous() || !dinp.is_contiguous()) {
      // the row loop takes dense rows: strided views run the reference kernel
      reference_fallback<op::softmax_backward>::run(be, dinp, dout, out, mode);
    } else {
      using namespace onednn_detail;
      const index_t R = out.extent(0), N = out.extent(1);
      if (R == 0 || N == 0) return;
      softmax_backward_rows(dinp.data(), out.data(), dout.data(), R, N, mode == grad_write::accumulate);
    }
  }
};

}  // namespace blip2
