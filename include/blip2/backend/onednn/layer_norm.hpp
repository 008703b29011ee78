// blip2/backend/onednn/layer_norm.hpp: LayerNorm through oneDNN's layer_normalization primitives.
//
// oneDNN keeps the variance where our cache keeps rstd = 1 / sqrt(var + eps): forward converts after
// the primitive, backward converts back into scratch. oneDNN writes (never adds) its gradients, so
// dweight, dbias and an accumulated dinp go through scratch and are added afterwards.
// Dimensions: R rows, C channels.
#pragma once
#include <cmath>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/layer_norm.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::layer_norm_forward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> out, tensor_view<T, 1> mean, tensor_view<T, 1> rstd,
                  tensor_view<const T, 2> inp, tensor_view<const T, 1> weight, tensor_view<const T, 1> bias, T eps) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::layer_norm_forward>::run(be, out, mean, rstd, inp, weight, bias, eps);  // double: reference
    } else if (!inp.is_contiguous() || !out.is_contiguous()) {
      // oneDNN 2.x takes one layout for src and dst: strided rows run the reference kernel
      reference_fallback<op::layer_norm_forward>::run(be, out, mean, rstd, inp, weight, bias, eps);
    } else {
      using namespace onednn_detail;
      const index_t R = inp.extent(0), C = inp.extent(1);
      if (R == 0 || C == 0) return;
      using lnf = dnnl::layer_normalization_forward;
      const auto data_md = desc_of(inp);
      const auto stat_md = dnnl::memory::desc({R}, dnnl::memory::data_type::f32, dims{mean.stride(0)});
      const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      auto& prim = be.primitive(make_key("layer_norm_forward", inp, mean) + "|" + std::to_string(eps), [&] {
        return build("layer_norm_forward", [&] {
          return dnnl::primitive(lnf(lnf::primitive_desc(
              lnf::desc(dnnl::prop_kind::forward_training, data_md, stat_md, eps, flags), be.engine())));
        });
      });
      float* var = be.scratch(0, R);
      const auto var_md = dnnl::memory::desc({R}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
      const auto vec_md = dnnl::memory::desc({C}, dnnl::memory::data_type::f32, dims{weight.stride(0)});
      const auto bias_md = dnnl::memory::desc({C}, dnnl::memory::data_type::f32, dims{bias.stride(0)});
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, inp)},
                        {DNNL_ARG_DST, memory_of(be, out)},
                        {DNNL_ARG_MEAN, memory_of(be, stat_md, mean.data())},
                        {DNNL_ARG_VARIANCE, memory_of(be, var_md, var)},
                        {DNNL_ARG_SCALE, memory_of(be, vec_md, weight.data())},
                        {DNNL_ARG_SHIFT, memory_of(be, bias_md, bias.data())}});
      for (index_t r = 0; r < R; ++r) rstd(r) = 1.0f / std::sqrt(var[r] + eps);
    }
  }
};

template <>
struct kernel<onednn_backend, op::layer_norm_backward> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<T, 1> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 1> weight,
                  tensor_view<const T, 1> mean, tensor_view<const T, 1> rstd, grad_write mode) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::layer_norm_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mean, rstd,
                                                       mode);  // double: reference
    } else if (!inp.is_contiguous() || !dout.is_contiguous()) {
      // one layout for data and its gradient in oneDNN 2.x: strided rows run the reference kernel
      reference_fallback<op::layer_norm_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mean, rstd, mode);
    } else {
      using namespace onednn_detail;
      using lnf = dnnl::layer_normalization_forward;
      using lnb = dnnl::layer_normalization_backward;
      const index_t R = inp.extent(0), C = inp.extent(1);
      if (R == 0 || C == 0) return;
      const auto f32 = dnnl::memory::data_type::f32;
      const auto data_md = desc_of(inp);
      const auto ddst_md = desc_of(dout);
      const auto dsrc_md = data_md;  // scratch, dense like inp
      const auto stat_md = dnnl::memory::desc({R}, f32, dims{mean.stride(0)});
      const auto var_md = dnnl::memory::desc({R}, f32, dnnl::memory::format_tag::a);
      const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      auto& prim = be.primitive(make_key("layer_norm_backward", inp, dout, mean), [&] {
        return build("layer_norm_backward", [&] {
          // eps is not used by backward given the variance; any value works for the hint
          auto hint = lnf::primitive_desc(
              lnf::desc(dnnl::prop_kind::forward_training, data_md, stat_md, 1e-12f, flags), be.engine());
          return dnnl::primitive(lnb(lnb::primitive_desc(
              lnb::desc(dnnl::prop_kind::backward, ddst_md, data_md, stat_md, 1e-12f, flags), be.engine(), hint)));
        });
      });
      // variance recovered from rstd; eps cancels: var + eps = 1 / rstd^2, and oneDNN only uses var + eps
      // through the eps it was built with, so give it var' = 1 / rstd^2 - eps_built.
      float* var = be.scratch(0, R);
      for (index_t r = 0; r < R; ++r) var[r] = 1.0f / (rstd(r) * rstd(r)) - 1e-12f;
      float* dsrc = be.scratch(1, R * C);
      float* dscale = be.scratch(2, 2 * C);
      float* dshift = dscale + C;
      const auto vec_md = dnnl::memory::desc({C}, f32, dims{weight.stride(0)});
      const auto dvec_md = dnnl::memory::desc({C}, f32, dnnl::memory::format_tag::a);
      be.execute(prim, {{DNNL_ARG_SRC, memory_of(be, inp)},
                        {DNNL_ARG_MEAN, memory_of(be, stat_md, mean.data())},
                        {DNNL_ARG_VARIANCE, memory_of(be, var_md, var)},
                        {DNNL_ARG_DIFF_DST, memory_of(be, dout)},
                        {DNNL_ARG_SCALE, memory_of(be, vec_md, weight.data())},
                        // oneDNN 2.6 refuses to execute without a shift argument when use_shift is set,
                        // though backward never reads it: any (C) buffer serves
                        {DNNL_ARG_SHIFT, memory_of(be, vec_md, weight.data())},
                        {DNNL_ARG_DIFF_SRC, memory_of(be, dsrc_md, dsrc)},
                        {DNNL_ARG_DIFF_SCALE, memory_of(be, dvec_md, dscale)},
                        {DNNL_ARG_DIFF_SHIFT, memory_of(be, dvec_md, dshift)}});
      for (index_t r = 0; r < R; ++r)
        for (index_t c = 0; c < C; ++c)
          dinp(r, c) = (mode == grad_write::accumulate ? dinp(r, c) : 0.0f) + dsrc[r * C + c];
      for (index_t c = 0; c < C; ++c) {
        dweight(c) += dscale[c];
        dbias(c) += dshift[c];
      }
    }
  }
};

}  // namespace blip2
