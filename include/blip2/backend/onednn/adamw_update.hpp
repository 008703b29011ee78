// adamw_update on the oneDNN backend: an elementwise, memory-bound update oneDNN has no primitive for.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/adamw_update.hpp"

template <>
struct blip2::kernel<blip2::onednn_backend, blip2::op::adamw_update> : blip2::reference_fallback<blip2::op::adamw_update> {};
