// blip2/backend/onednn/softmax.hpp: softmax through oneDNN's softmax_v2 primitives (axis 1 of (R, N)).
//
// forward:  a mask (or a strided input) is added into a dense scratch (a loop), which the primitive
//           reads; the primitive writes out directly (in place when out is inp and there is no mask).
// backward: softmax_v2_backward from dst = out and diff_dst = dout; it writes (never adds), so an
//           accumulated dinp (or one that aliases dout) goes through scratch and is added afterwards.
// out, dout and dinp of a non-dense layout run the reference kernel (one explicit line each).
// Dimensions: R rows, N entries per row.
#pragma once
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

inline dnnl::primitive& softmax_backward_primitive(onednn_backend& be, const dnnl::memory::desc& md,
                                                   const std::string& key) {
  using smf = dnnl::softmax_v2_forward;
  using smb = dnnl::softmax_v2_backward;
  return be.primitive("softmax_backward" + key, [&] {
    return build("softmax_backward", [&] {
      auto hint = smf::primitive_desc(
          smf::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::softmax_accurate, md, md, 1), be.engine());
      return dnnl::primitive(
          smb(smb::primitive_desc(smb::desc(dnnl::algorithm::softmax_accurate, md, md, md, 1), be.engine(), hint)));
    });
  });
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
      // softmax_v2 takes dense rows: strided views run the reference kernel
      reference_fallback<op::softmax_backward>::run(be, dinp, dout, out, mode);
    } else {
      using namespace onednn_detail;
      const index_t R = out.extent(0), N = out.extent(1);
      if (R == 0 || N == 0) return;
      const dnnl::memory::desc md({R, N}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab);
      // written straight into dinp when it is assigned and distinct from dout, else into scratch
      const bool direct = mode == grad_write::assign && dinp.data() != dout.data();
      float* dst = direct ? dinp.data() : be.scratch(0, R * N);
      auto& prim = softmax_backward_primitive(be, md, rows_key(R, N));
      be.execute(prim, {{DNNL_ARG_DST, memory_of(be, md, out.data())},
                        {DNNL_ARG_DIFF_DST, memory_of(be, md, dout.data())},
                        {DNNL_ARG_DIFF_SRC, memory_of(be, md, dst)}});
      if (!direct) {
        const bool acc = mode == grad_write::accumulate;
        BLIP2_OMP_FOR
        for (index_t r = 0; r < R; ++r)
          for (index_t n = 0; n < N; ++n) dinp(r, n) = (acc ? dinp(r, n) : 0.0f) + dst[r * N + n];
      }
    }
  }
};

}  // namespace blip2
