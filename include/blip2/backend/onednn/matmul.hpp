// blip2/backend/onednn/matmul.hpp: batched strided matmul through oneDNN's matmul primitive.
//
// oneDNN's matmul takes plain memory descriptors with arbitrary strides, so transposed operands
// (swapped strides) and strided head views cost no copy. alpha is the attribute's output scale, beta a
// sum post-op (dst = alpha * A B + beta * dst); beta == 0 has no sum post-op, so C is never read.
// An operand broadcast over the batch (stride 0) is described with batch extent 1, oneDNN's broadcast
// (when both are, the batch is a loop: oneDNN wants dst's batch to be one of the operands').
// The primitive is cached by extents, strides, alpha and beta.
// With several OpenMP threads a rank-2 product is split by columns of C (matmul_split_width): one
// parallel region, each thread running a single-threaded primitive on its slice.
//
// run_matmul<Rank> (rank 2 to 4: linear, matmul, attention's (B, NH, T, HS) head views) and
// matmul_fits are shared with the linear and attention kernels.
// Dimensions: batch..., M, K, N.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/matmul.hpp"

namespace blip2 {
namespace onednn_detail {

// The extents and strides under which oneDNN sees a matmul operand. Matrix dimensions of extent 1 get
// a stride that makes the operand look plainly row- or column-major (their stride is never used, but
// oneDNN picks its implementation from it); batch dimensions of extent 1, or broadcast with stride 0,
// become extent 1 with a stride past the matrix.
template <class T, std::size_t R>
void matmul_dims(const tensor_view<T, R>& v, dims& e, dims& s) {
  e = extents_of(v);
  s = strides_of(v);
  const std::size_t r = R - 2, c = R - 1;  // the matrix dimensions
  if (e[r] == 1 && e[c] == 1) {
    s[r] = s[c] = 1;
  } else if (e[r] == 1) {
    s[r] = s[c] == 1 ? e[c] : 1;  // a row vector: dense, or a strided column (transposed, ld = s[c])
  } else if (e[c] == 1) {
    s[c] = 1;  // a column vector: row-major with leading dimension s[r]
  }
  index_t past = std::max(s[r] * e[r], s[c] * e[c]);
  for (std::size_t d = r; d-- > 0;) {
    if (e[d] == 1 || s[d] == 0) {
      e[d] = 1;
      s[d] = past;
    }
    past = std::max(past, s[d] * e[d]);
  }
}

// oneDNN takes no zero or negative strides inside a matrix.
template <class T, std::size_t R>
bool matmul_operand_fits(const tensor_view<T, R>& v) {
  for (std::size_t d = 0; d < R; ++d)
    if (v.stride(d) < 0 || (d + 2 >= R && v.extent(d) > 1 && v.stride(d) == 0)) return false;
  return true;
}
template <class TC, class TA, class TB, std::size_t R>
bool matmul_fits(const tensor_view<TC, R>& c, const tensor_view<TA, R>& a, const tensor_view<TB, R>& b) {
  return matmul_operand_fits(c) && matmul_operand_fits(a) && matmul_operand_fits(b);
}

inline void key_append_scalar(std::string& key, float x) {
  key += '|';
  key += std::to_string(std::bit_cast<std::uint32_t>(x));
}

// The cached primitive of one matmul shape (extents, strides, alpha, beta, bias) and its descriptors.
// slot > 0 names a separate primitive object for the same shape (one per worker thread).
struct matmul_call {
  dnnl::primitive* prim;
  dnnl::memory::desc a_md, b_md, c_md, bias_md;
};
template <std::size_t R>
matmul_call matmul_primitive(onednn_backend& be, const tensor_view<float, R>& c, const tensor_view<const float, R>& a,
                             const tensor_view<const float, R>& b, float alpha, float beta, bool bias,
                             index_t bias_stride, int slot = 0) {
  dims ae, as, be_, bs, ce, cs;
  matmul_dims(a, ae, as);
  matmul_dims(b, be_, bs);
  matmul_dims(c, ce, cs);
  const auto f32 = dnnl::memory::data_type::f32;
  matmul_call call{nullptr, dnnl::memory::desc(ae, f32, as), dnnl::memory::desc(be_, f32, bs),
                   dnnl::memory::desc(ce, f32, cs), {}};
  dims bias_e(R, 1), bias_s(R, 0);
  bias_e[R - 1] = c.extent(R - 1);
  for (std::size_t d = 0; d < R; ++d) bias_s[d] = d + 1 == R ? bias_stride : bias_stride * c.extent(R - 1);
  call.bias_md = dnnl::memory::desc(bias_e, f32, bias_s);

  std::string key = "matmul";
  for (const dims* d : {&ae, &as, &be_, &bs, &ce, &cs}) key_append(key, *d);
  key_append_scalar(key, alpha);
  key_append_scalar(key, beta);
  if (bias) key += "|bias" + std::to_string(bias_stride);
  if (slot > 0) {
    key += "|worker";
    key += std::to_string(slot);
  }
  call.prim = &be.primitive(key, [&] {
    return build("matmul", [&] {
      dnnl::primitive_attr attr;
      if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
      if (beta != 0.0f) {
        dnnl::post_ops po;
        po.append_sum(beta);
        attr.set_post_ops(po);
      }
      const auto desc = bias ? dnnl::matmul::desc(call.a_md, call.b_md, call.bias_md, call.c_md)
                             : dnnl::matmul::desc(call.a_md, call.b_md, call.c_md);
      return dnnl::primitive(dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, be.engine())));
    });
  });
  return call;
}

inline std::unordered_map<int, dnnl::memory> matmul_args(onednn_backend& be, const matmul_call& call, const float* a,
                                                         const float* b, float* c, const float* bias) {
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, memory_of(be, call.a_md, a)},
                                             {DNNL_ARG_WEIGHTS, memory_of(be, call.b_md, b)},
                                             {DNNL_ARG_DST, memory_of(be, call.c_md, c)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory_of(be, call.bias_md, bias));
  return args;
}

// How a rank-2 matmul is spread over T > 1 threads: 0 (oneDNN's own threading) or the width of the
// column slices that each thread computes alone, each reading only its slice of B (the weights, the
// traffic that counts when A has few rows). On an idle machine the two run the Q-Former's shapes at the
// same speed. But oneDNN's gemm synchronises its threads several times per call, and each
// synchronisation waits for a scheduler slice whenever another process holds a core; the split forks and
// joins once. Under contention the gain is noisy and not always one (measurements in benchmarks/README.md).
// Columns are split in multiples of 16 (the kernels' register blocking), at least 64 per thread.
inline index_t matmul_split_width(index_t N, int T) {
  if (T <= 1) return 0;
  const index_t w = (N + T - 1) / T;
  if (w < 64) return 0;
  return (w + 15) / 16 * 16;
}

// C = alpha * A B (+ bias, broadcast over rows) + beta * C, for views already checked by the public op.
// bias, when given, is a vector of N floats with stride bias_stride.
template <std::size_t R>
void run_matmul(onednn_backend& be, tensor_view<float, R> c, tensor_view<const float, R> a,
                tensor_view<const float, R> b, float alpha, float beta, const float* bias = nullptr,
                index_t bias_stride = 1) {
  static_assert(R >= 2 && R <= 4, "run_matmul: rank 2 to 4");
  const index_t K = a.extent(R - 1);
  if (c.size() == 0) return;
  if (K == 0) {  // an empty sum: C = bias + beta C (oneDNN does not take zero-size inputs)
    for (index_t i = 0; i < c.size(); ++i) {
      extents_t<R> idx{};
      index_t rest = i, off = 0;
      for (std::size_t d = R; d-- > 0;) {
        idx[d] = rest % c.extent(d);
        rest /= c.extent(d);
        off += idx[d] * c.stride(d);
      }
      float& x = c.data()[off];
      x = (bias ? bias[idx[R - 1] * bias_stride] : 0.0f) + (beta == 0.0f ? 0.0f : beta * x);
    }
    return;
  }
  if constexpr (R == 2) {
    const index_t M = c.extent(0), N = c.extent(1), w = matmul_split_width(N, be.split_threads());
    if (w > 0) {
      // column slices [t w, min((t + 1) w, N)): C[:, slice] = alpha A B[:, slice] (+ bias[slice]) + beta C[:, slice]
      const int parts = static_cast<int>((N + w - 1) / w);
      be.prepare_workers(parts);
      std::vector<std::unordered_map<int, dnnl::memory>> args(static_cast<std::size_t>(parts));
      std::vector<dnnl::primitive*> prims(static_cast<std::size_t>(parts));
      for (int t = 0; t < parts; ++t) {
        const index_t n0 = t * w, n = std::min(N, n0 + w) - n0;
        const tensor_view<float, 2> cs(c.data() + n0 * c.stride(1), {M, n}, c.strides());
        const tensor_view<const float, 2> bs(b.data() + n0 * b.stride(1), {K, n}, b.strides());
        const auto call = matmul_primitive<2>(be, cs, a, bs, alpha, beta, bias != nullptr, bias_stride, t + 1);
        prims[static_cast<std::size_t>(t)] = call.prim;
        args[static_cast<std::size_t>(t)] =
            matmul_args(be, call, a.data(), bs.data(), cs.data(), bias ? bias + n0 * bias_stride : nullptr);
      }
      run_workers(parts, [&](int t, int nt) {
        for (int s = t; s < parts; s += nt) {  // every slice, even when the team is smaller than asked
          prims[static_cast<std::size_t>(s)]->execute(be.worker_stream(t), args[static_cast<std::size_t>(s)]);
          be.worker_stream(t).wait();
        }
      });
      return;
    }
  }
  const auto call = matmul_primitive<R>(be, c, a, b, alpha, beta, bias != nullptr, bias_stride);
  be.execute(*call.prim, matmul_args(be, call, a.data(), b.data(), c.data(), bias));
}

}  // namespace onednn_detail

template <>
struct kernel<onednn_backend, op::matmul> {
  template <class T>
  static void run(onednn_backend& be, tensor_view<T, 3> c, tensor_view<const T, 3> a, tensor_view<const T, 3> b,
                  T alpha, T beta) {
    if constexpr (!std::is_same_v<T, float>) {
      reference_fallback<op::matmul>::run(be, c, a, b, alpha, beta);  // double: reference
    } else if (!onednn_detail::matmul_fits(c, a, b)) {
      // a zero stride inside a matrix (a repeated row or column) or a negative stride: oneDNN has no
      // descriptor for it
      reference_fallback<op::matmul>::run(be, c, a, b, alpha, beta);
    } else if (c.extent(0) > 1 && a.stride(0) == 0 && b.stride(0) == 0) {
      // both operands broadcast: oneDNN's dst batch must be one of theirs, so run batch by batch (one
      // cached primitive for all of them)
      for (index_t p = 0; p < c.extent(0); ++p)
        onednn_detail::run_matmul<2>(be, slice(c, p), slice(a, p), slice(b, p), alpha, beta);
    } else {
      onednn_detail::run_matmul<3>(be, c, a, b, alpha, beta);
    }
  }
};

}  // namespace blip2
