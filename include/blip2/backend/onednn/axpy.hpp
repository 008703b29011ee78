// axpy on the oneDNN backend: a memory-bound loop that oneDNN's binary primitive would not speed up.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/axpy.hpp"

template <>
struct blip2::kernel<blip2::onednn_backend, blip2::op::axpy> : blip2::reference_fallback<blip2::op::axpy> {};
