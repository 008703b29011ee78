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

// The op list. Each tag names one kernel; the public function of the same name checks
// the arguments and dispatches.
namespace op {
#define BLIP2_OP(name_)                                   \
  struct name_ {                                          \
    static constexpr std::string_view name = #name_;      \
  };
BLIP2_OP(matmul)                  // C[b] = alpha * A[b] B[b] + beta * C[b], any strides (transposes)
BLIP2_OP(linear_forward)          // out = inp weight^T + bias
BLIP2_OP(linear_backward)         // dinp, dweight +=, dbias +=
BLIP2_OP(layer_norm_forward)      // out = (inp - mean) * rstd * weight + bias; caches mean, rstd
BLIP2_OP(layer_norm_backward)
BLIP2_OP(gelu_forward)            // exact erf GELU
BLIP2_OP(gelu_backward)
BLIP2_OP(softmax_forward)         // softmax over the last axis of inp + additive mask
BLIP2_OP(softmax_backward)
BLIP2_OP(attention_forward)       // multi-head scaled dot-product attention under a mask policy
BLIP2_OP(attention_backward)
BLIP2_OP(dropout_forward)         // seeded, counter-based: the mask is regenerated in backward
BLIP2_OP(dropout_backward)
BLIP2_OP(embedding_forward)       // gather rows of a table
BLIP2_OP(embedding_backward)      // scatter-add into the table's gradient
BLIP2_OP(l2_normalize_forward)    // rows divided by max(norm, eps)
BLIP2_OP(l2_normalize_backward)
BLIP2_OP(row_max_forward)         // max and argmax of each row
BLIP2_OP(row_max_backward)
BLIP2_OP(cross_entropy_forward)   // label smoothing, ignore index, mean over counted rows
BLIP2_OP(cross_entropy_backward)
BLIP2_OP(axpy)                    // y += alpha x (residual connections, gradient accumulation)
BLIP2_OP(copy)                    // dst = src, any strides (layout changes)
BLIP2_OP(fill)                    // dst = value, any strides
BLIP2_OP(copy_to_host)            // host dst = src in the backend's memory, same shape, any strides
BLIP2_OP(copy_from_host)          // dst in the backend's memory = host src, same shape, any strides
#undef BLIP2_OP
}  // namespace op

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
