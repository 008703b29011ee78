// blip2/backend/onednn/dropout.hpp: dropout on the oneDNN backend: the reference kernels.
// oneDNN 2.6 has no dropout primitive and no random number generator (a dropout attribute arrives in
// oneDNN 3.x, with its own generator, which could not reproduce the Philox keep rule that the reference
// and attention's dropout share); the reference loop is already one pass over the data.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/dropout.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::dropout_forward> : reference_fallback<op::dropout_forward> {};
template <>
struct kernel<onednn_backend, op::dropout_backward> : reference_fallback<op::dropout_backward> {};

}  // namespace blip2
