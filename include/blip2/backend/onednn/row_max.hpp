// blip2/backend/onednn/row_max.hpp: row max / argmax on the oneDNN backend: the reference kernels.
// oneDNN 2.6's reduction primitive gives the max but no argmax (which backward needs) and does not
// promise torch.max's NaN propagation; backward is a scatter of one element per row, no primitive either.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/row_max.hpp"

namespace blip2 {

template <>
struct kernel<onednn_backend, op::row_max_forward> : reference_fallback<op::row_max_forward> {};
template <>
struct kernel<onednn_backend, op::row_max_backward> : reference_fallback<op::row_max_backward> {};

}  // namespace blip2
