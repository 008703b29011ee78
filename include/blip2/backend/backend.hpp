// blip2/backend/backend.hpp: what a backend is, the list of ops, and how a call reaches a kernel.
//
// A backend is a value that owns its resources (engine, stream, primitive cache, handles) and names
// the memory space its kernels read:
//     struct my_backend { using memory_space = blip2::host_space; static constexpr const char* name = "mine"; };
// Public calls take the backend first, check their arguments, and dispatch at compile time to
//     blip2::kernel<Backend, blip2::op::X>::run(be, views...)
// A backend implements op X by specialising kernel<its type, op::X>. A backend that lacks a kernel
// fails to compile with a static_assert naming the op. Falling back to the reference backend is one
// explicit line (reference_fallback, in backend/reference/reference_backend.hpp), never silent:
//     template <> struct blip2::kernel<my_backend, blip2::op::gelu_backward>
//         : blip2::reference_fallback<blip2::op::gelu_backward> {};
#pragma once
#include <concepts>
#include <cstddef>
#include <string_view>
#include <utility>

#include "blip2/core/memory_space.hpp"

namespace blip2 {

template <class B>
concept backend = requires {
  typename B::memory_space;
  requires memory_space<typename B::memory_space>;
  { B::name } -> std::convertible_to<std::string_view>;
};

// The op list, written once. Each entry names one kernel; the public function of the same name checks
// the arguments and dispatches. From it come the tags (op::matmul, ...), all_ops and for_each_op, and the
// conformance test walks it (every op needs a case, a kernel or an explicit fallback on every backend,
// and a row in the README's table), so adding an op here is what makes the tests ask for the rest.
#define BLIP2_OP_LIST(X)                                                                           \
  X(matmul)                 /* C[b] = alpha * A[b] B[b] + beta * C[b], any strides (transposes) */ \
  X(linear_forward)         /* out = inp weight^T + bias */                                        \
  X(linear_backward)        /* dinp, dweight +=, dbias += (each may be empty: frozen) */           \
  X(linear_bf16_forward)    /* out = inp weight^T + bias, weight stored bfloat16 (decode path) */  \
  X(layer_norm_forward)     /* out = (inp - mean) * rstd * weight + bias; caches mean, rstd */     \
  X(layer_norm_backward)    /* dinp; dweight +=, dbias += (each may be empty: frozen) */           \
  X(gelu_forward)           /* exact erf GELU */                                                   \
  X(gelu_backward)                                                                                 \
  X(relu_forward)           /* max(x, 0), NaN kept */                                              \
  X(relu_backward)                                                                                 \
  X(softmax_forward)        /* softmax over the last axis of inp + additive mask */                \
  X(softmax_backward)                                                                              \
  X(attention_forward)      /* multi-head scaled dot-product attention under a mask policy */      \
  X(attention_backward)                                                                            \
  X(dropout_forward)        /* seeded, counter-based: the mask is regenerated in backward */       \
  X(dropout_backward)                                                                              \
  X(embedding_forward)      /* gather rows of a table */                                           \
  X(embedding_backward)     /* scatter-add into the table's gradient */                            \
  X(l2_normalize_forward)   /* rows divided by max(norm, eps) */                                   \
  X(l2_normalize_backward)                                                                         \
  X(row_max_forward)        /* max and argmax of each row */                                       \
  X(row_max_backward)                                                                              \
  X(cross_entropy_forward)  /* label smoothing, ignore index, mean over counted rows */            \
  X(cross_entropy_backward)                                                                        \
  X(adamw_update)           /* AdamW's update of one arena segment: p, m, v from g */              \
  X(axpy)                   /* y += alpha x (residual connections, gradient accumulation) */       \
  X(copy)                   /* dst = src, any strides (layout changes) */                          \
  X(fill)                   /* dst = value, any strides */                                         \
  X(copy_to_host)           /* host dst = src in the backend's memory, same shape, any strides */  \
  X(copy_from_host)         /* dst in the backend's memory = host src, same shape, any strides */

// The tags: struct op::matmul { static constexpr std::string_view name = "matmul"; }, ...
namespace op {
#define BLIP2_OP_TAG(name_)                          \
  struct name_ {                                     \
    static constexpr std::string_view name = #name_; \
  };
BLIP2_OP_LIST(BLIP2_OP_TAG)
#undef BLIP2_OP_TAG
}  // namespace op

// The list as a type, for code that walks every op (the conformance test, backend reports).
template <class... Ops>
struct op_list {
  static constexpr std::size_t size = sizeof...(Ops);
};

namespace detail {
template <class List>
struct drop_first;
template <class First, class... Ops>
struct drop_first<op_list<First, Ops...>> {
  using type = op_list<Ops...>;
};
}  // namespace detail

#define BLIP2_OP_ENTRY(name_) , op::name_
using all_ops = typename detail::drop_first<op_list<void BLIP2_OP_LIST(BLIP2_OP_ENTRY)>>::type;
#undef BLIP2_OP_ENTRY

// f(op::X{}) for every op of the list, in its order.
template <class F>
constexpr void for_each_op(F&& f) {
  [&]<class... Ops>(op_list<Ops...>) { (f(Ops{}), ...); }(all_ops{});
}

// Specialised by each backend for each op it implements; the primary template is never defined.
template <class Backend, class Op>
struct kernel;

// True when kernel<Backend, Op> has been specialised (and its header included).
template <class Backend, class Op>
concept has_kernel = requires { sizeof(kernel<Backend, Op>); };

// Whether op Op on Backend runs the reference kernels through a fallback (reported by the tests).
template <class Backend, class Op>
constexpr bool is_fallback() {
  if constexpr (requires { kernel<Backend, Op>::is_fallback; })
    return kernel<Backend, Op>::is_fallback;
  else
    return false;
}

}  // namespace blip2

// Used by every public op: a readable compile error when the backend has no kernel for the op.
#define BLIP2_DISPATCH(Backend, op_name, be, ...)                                                        \
  do {                                                                                                    \
    static_assert(::blip2::has_kernel<Backend, ::blip2::op::op_name>,                                     \
                  "blip2: this backend has no kernel for op '" #op_name                                   \
                  "'. Include its header, specialise blip2::kernel<Backend, blip2::op::" #op_name         \
                  ">, or fall back explicitly: template <> struct blip2::kernel<Backend, blip2::op::" #op_name \
                  "> : blip2::reference_fallback<blip2::op::" #op_name "> {};");                          \
    ::blip2::kernel<Backend, ::blip2::op::op_name>::run(be, __VA_ARGS__);                                \
  } while (0)
