// blip2/backend/onednn/l2_normalize.hpp: row L2 normalisation on the oneDNN backend: the reference kernels.
// oneDNN 2.6 has no normalise-by-norm primitive (lrn normalises over a window of channels with a power
// law, not by the row's L2 norm); a reduction (norm_lp_max) followed by a binary division would make
// three passes and two primitive calls where the reference makes two passes, on rows of only D = 256.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/l2_normalize.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::l2_normalize_forward> : reference_fallback<op::l2_normalize_forward> {};
template <>
struct kernel<onednn_backend, op::l2_normalize_backward> : reference_fallback<op::l2_normalize_backward> {};

}  // namespace blip2
