// blip2/backend/onednn/relu.hpp: ReLU on the oneDNN backend: the reference loops, explicitly (a
// memory-bound elementwise op that the models call on rows the matmuls just wrote).
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/relu.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::relu_forward> : reference_fallback<op::relu_forward> {};
template <>
struct kernel<onednn_backend, op::relu_backward> : reference_fallback<op::relu_backward> {};

}  // namespace blip2
