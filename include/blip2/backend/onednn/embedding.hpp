// blip2/backend/onednn/embedding.hpp: embedding on the oneDNN backend: the reference kernels.
// oneDNN 2.6 has no gather or scatter-add primitive (no op indexes rows by an integer tensor), and the
// lookup is a copy of rows, which the reference loop does at memory speed.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/embedding.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::embedding_forward> : reference_fallback<op::embedding_forward> {};
template <>
struct kernel<onednn_backend, op::embedding_backward> : reference_fallback<op::embedding_backward> {};

}  // namespace blip2
