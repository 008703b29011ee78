// copy on the oneDNN backend: a strided loop; oneDNN's reorder would need a primitive per layout.
// The host copies are the same copy: the oneDNN CPU backend's memory is the host's.
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/copy.hpp"

template <>
struct blip2::kernel<blip2::onednn_backend, blip2::op::copy> : blip2::reference_fallback<blip2::op::copy> {};

template <>
struct blip2::kernel<blip2::onednn_backend, blip2::op::copy_to_host>
    : blip2::reference_fallback<blip2::op::copy_to_host> {};

template <>
struct blip2::kernel<blip2::onednn_backend, blip2::op::copy_from_host>
    : blip2::reference_fallback<blip2::op::copy_from_host> {};
