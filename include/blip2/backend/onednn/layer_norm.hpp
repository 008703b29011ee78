// blip2/backend/onednn/layer_norm.hpp: LayerNorm on the oneDNN backend.
//
// forward: oneDNN's layer_normalization primitive. oneDNN keeps the variance where our cache keeps
//   rstd = 1 / sqrt(var + eps): the forward converts after the primitive.
// backward: plain loops over rows. oneDNN 2.6's backward primitive writes (never adds) its gradients and
//   wants the variance back, so using it meant conversion loops and scratch copies around every call,
//   which cost more than the arithmetic (the figures: benchmarks/README.md); the forward primitive stays,
//   as its JIT code beat loops compiled without AVX2 at the larger sizes. They do the reference
//   kernel's arithmetic in float; a row's sums run over 8 partial sums (lane j takes columns j, j + 8,
//   ...), which the compiler turns into vector adds without reassociating anything, so the result does
//   not depend on the thread count. Rows are split over the OpenMP threads, dweight/dbias over blocks of
//   columns (each column sums its rows in row order). Float with unit column stride only; double and
//   strided views run the reference kernel.
// Dimensions: R rows, C channels.
#pragma once
#include <algorithm>
#include <cmath>

#include "blip2/backend/onednn/lane_sum.hpp"
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/layer_norm.hpp"

namespace blip2 {

namespace onednn_detail {
inline bool unit_columns(index_t C, std::initializer_list<index_t> strides) {
  return C <= 1 || std::all_of(strides.begin(), strides.end(), [](index_t s) { return s == 1; });
}
}  // namespace onednn_detail

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
  static constexpr index_t column_block = 64;

  // dweight += sum_r dout norm (DW), dbias += sum_r dout (DB), float views with unit column strides
  template <bool DW, bool DB>
  static void param_grads(tensor_view<float, 1> dweight, tensor_view<float, 1> dbias, tensor_view<const float, 2> dout,
                          tensor_view<const float, 2> inp, tensor_view<const float, 1> mean,
                          tensor_view<const float, 1> rstd) {
    const index_t R = inp.extent(0), C = inp.extent(1);
    const index_t blocks = (C + column_block - 1) / column_block;
    BLIP2_OMP_FOR
    for (index_t blk = 0; blk < blocks; ++blk) {
      const index_t c0 = blk * column_block, n = std::min(column_block, C - c0);
      float dw[column_block] = {}, db[column_block] = {};
      for (index_t r = 0; r < R; ++r) {
        const float* x = inp.data() + r * inp.stride(0) + c0;
        const float* dy = dout.data() + r * dout.stride(0) + c0;
        const float m = mean(r), s = rstd(r);
        for (index_t c = 0; c < n; ++c) {
          if constexpr (DW) dw[c] += dy[c] * ((x[c] - m) * s);
          if constexpr (DB) db[c] += dy[c];
        }
      }
      for (index_t c = 0; c < n; ++c) {
        if constexpr (DW) dweight(c0 + c) += dw[c];
        if constexpr (DB) dbias(c0 + c) += db[c];
      }
    }
  }

  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 2> dinp, tensor_view<T, 1> dweight, tensor_view<T, 1> dbias,
                  tensor_view<const T, 2> dout, tensor_view<const T, 2> inp, tensor_view<const T, 1> weight,
                  tensor_view<const T, 1> mean, tensor_view<const T, 1> rstd, grad_write mode) {
    const index_t R = inp.extent(0), C = inp.extent(1);
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::layer_norm_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mean, rstd, mode);
    } else if (!onednn_detail::unit_columns(C, {dinp.stride(1), dout.stride(1), inp.stride(1), weight.stride(0),
                                               dweight.data() ? dweight.stride(0) : 1,
                                               dbias.data() ? dbias.stride(0) : 1})) {
      reference_fallback<op::layer_norm_backward>::run(be, dinp, dweight, dbias, dout, inp, weight, mean, rstd, mode);
    } else {
      const float* w = weight.data();
      const bool acc = mode == grad_write::accumulate;
      // dinp = (dnorm - mean(dnorm) - norm mean(dnorm norm)) rstd, dnorm = dout weight, norm = (inp - mean) rstd
      BLIP2_OMP_FOR
      for (index_t r = 0; r < R; ++r) {
        const float* x = inp.data() + r * inp.stride(0);
        const float* dy = dout.data() + r * dout.stride(0);
        float* dx = dinp.data() + r * dinp.stride(0);
        const float m = mean(r), s = rstd(r);
        const float a = onednn_detail::lane_sum(C, [&](index_t c) { return dy[c] * w[c]; }) / static_cast<float>(C);
        const float bb =
            onednn_detail::lane_sum(C, [&](index_t c) { return dy[c] * w[c] * ((x[c] - m) * s); }) / static_cast<float>(C);
        for (index_t c = 0; c < C; ++c) {
          const float g = (dy[c] * w[c] - a - (x[c] - m) * s * bb) * s;
          dx[c] = acc ? dx[c] + g : g;
        }
      }
      // dweight += sum_r dout norm, dbias += sum_r dout: blocks of columns, rows in order; a frozen
      // layer (both empty) skips this, and either is computed alone when the other is empty
      if (dweight.data() && dbias.data())
        param_grads<true, true>(dweight, dbias, dout, inp, mean, rstd);
      else if (dweight.data())
        param_grads<true, false>(dweight, dbias, dout, inp, mean, rstd);
      else if (dbias.data())
        param_grads<false, true>(dweight, dbias, dout, inp, mean, rstd);
    }
  }
};

}  // namespace blip2
