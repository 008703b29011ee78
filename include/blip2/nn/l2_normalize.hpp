// blip2/nn/l2_normalize.hpp: L2 normalisation of rows, forward and backward, as
// torch.nn.functional.normalize(x, p=2, dim=-1, eps).
//
// Dimensions: R rows (B Q image features or B text features), D projection dim.
//   forward:  n = ||inp[r, :]||_2 (cached, unclamped), out = inp / max(n, eps)
//   backward: n >= eps: dinp = dout / n - inp (inp . dout) / n^3
//             n <  eps: dinp = dout / eps   (the clamped branch: the denominator is the constant eps)
//             assigned, or added with grad_write::accumulate
// A zero row gives a zero output and the gradient dout / eps, as in PyTorch.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2 {

// What backward needs from forward: each row's L2 norm, before clamping.
template <class T, class Space = host_space>
struct l2_normalize_cache {
  tensor_view<T, 1, Space> norm;  // (R)
};

template <backend Be, class Out, class T, class In>
void l2_normalize_forward(Be& be, Out&& out, In&& inp, l2_normalize_cache<T, typename Be::memory_space> cache,
                          double eps = 1e-12) {
  constexpr std::string_view op = "l2_normalize_forward";
  auto o = detail::arg_view<Be, 2>(out);                      // (R, D)
  auto i = detail::as_const(detail::arg_view<Be, 2>(inp));    // (R, D)
  static_assert(std::is_same_v<typename decltype(o)::element_type, T> &&
                    std::is_same_v<typename decltype(i)::value_type, T>,
                "l2_normalize_forward: out, inp and cache differ in type");
  const index_t R = i.extent(0), D = i.extent(1);
  detail::check_shape(op, "out", o, {R, D});
  detail::check_shape(op, "cache.norm", cache.norm, {R});
  BLIP2_CHECK(eps > 0, value_error, op, ": eps = ", eps, " must be > 0");
  BLIP2_DISPATCH(Be, l2_normalize_forward, be, o, cache.norm, i, static_cast<T>(eps));
}

template <backend Be, class DInp, class DOut, class In, class T>
void l2_normalize_backward(Be& be, DInp&& dinp, DOut&& dout, In&& inp,
                           l2_normalize_cache<T, typename Be::memory_space> cache, double eps = 1e-12,
                           grad_write mode = grad_write::assign) {
  constexpr std::string_view op = "l2_normalize_backward";
  auto di = detail::arg_view<Be, 2>(dinp);                    // (R, D)
  auto d = detail::as_const(detail::arg_view<Be, 2>(dout));   // (R, D)
  auto i = detail::as_const(detail::arg_view<Be, 2>(inp));    // (R, D)
  static_assert(std::is_same_v<typename decltype(di)::element_type, T> &&
                    std::is_same_v<typename decltype(d)::value_type, T> &&
                    std::is_same_v<typename decltype(i)::value_type, T>,
                "l2_normalize_backward: dinp, dout, inp and cache differ in type");
  const index_t R = i.extent(0), D = i.extent(1);
  detail::check_shape(op, "dinp", di, {R, D});
  detail::check_shape(op, "dout", d, {R, D});
  detail::check_shape(op, "cache.norm", cache.norm, {R});
  BLIP2_CHECK(eps > 0, value_error, op, ": eps = ", eps, " must be > 0");
  BLIP2_DISPATCH(Be, l2_normalize_backward, be, di, d, i, detail::as_const(cache.norm), static_cast<T>(eps), mode);
}

}  // namespace blip2
