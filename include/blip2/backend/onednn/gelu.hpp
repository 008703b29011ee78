// blip2/backend/onednn/gelu.hpp: exact GELU through oneDNN's eltwise primitives (algorithm gelu_erf).
//
// oneDNN 2.x eltwise takes one layout for src and dst (and one for diff_src and diff_dst), so the
// primitive runs on dense rows; strided views and double run the reference kernel. Backward writes
// (never adds): an accumulated dinp goes through scratch and is added afterwards.
// Dimensions: R rows, C columns.
#pragma once
#include <type_traits>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/gelu.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::gelu_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<const T, 2> inp) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::gelu_forward>::run(be, out, inp);  // double: reference
    } else if (!inp.is_contiguous() || !out.is_contiguous()) {
      reference_fallback<op::gelu_forward>::run(be, out, inp);  // one layout for src and dst in oneDNN 2.x
    } else {
      using namespace onednn_detail;
      const index_t n = inp.size();
      if (n == 0) return;
      using ef = dnnl::eltwise_forward;
      // elementwise: a flat (n) descriptor, so every shape of the same size shares one primitive
      const auto md = dnnl::memory::desc({n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
      auto& prim = be.primitive("gelu_forward|" + std::to_string(n), [&] {
        return build("gelu_forward", [&] {
          return dnnl::primitive(ef(ef::primitive_desc(
              ef::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_gelu_erf, md, 0.f, 0.f),
              be.engine())));
        });
      });
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, md, inp.data())}, {DNNL_ARG_DST, memory_of(be, md, out.data())}});
    }
  }
};

template <>
struct kernel<onednn_backend, op::gelu_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<const T, 2> dout,
                  tensor_view<const T, 2> inp, grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::gelu_backward>::run(be, dinp, dout, inp, mode);  // double: reference
    } else if (!inp.is_contiguous() || !dout.is_contiguous() || !dinp.is_contiguous()) {
      reference_fallback<op::gelu_backward>::run(be, dinp, dout, inp, mode);  // one layout per primitive in 2.x
    } else {
      using namespace onednn_detail;
      const index_t n = inp.size();
      if (n == 0) return;
      using ef = dnnl::eltwise_forward;
      using eb = dnnl::eltwise_backward;
      const auto md = dnnl::memory::desc({n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
      auto& prim = be.primitive("gelu_backward|" + std::to_string(n), [&] {
        return build("gelu_backward", [&] {
          auto hint = ef::primitive_desc(
              ef::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::eltwise_gelu_erf, md, 0.f, 0.f),
              be.engine());
          return dnnl::primitive(
              eb(eb::primitive_desc(eb::desc(dnnl::algorithm::eltwise_gelu_erf, md, md, 0.f, 0.f), be.engine(), hint)));
        });
      });
      const bool add = mode == grad_write::accumulate;
      float* dsrc = add ? be.scratch(0, n) : dinp.data();
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, md, inp.data())},
                        {DNNL_ARG_DIFF_DST, memory_of(be, md, dout.data())},
                        {DNNL_ARG_DIFF_SRC, memory_of(be, md, dsrc)}});
      if (add) {
        float* d = dinp.data();
        BLIP2_OMP_FOR
        for (index_t k = 0; k < n; ++k) d[k] += dsrc[k];
      }
    }
  }
};

}  // namespace blip2
