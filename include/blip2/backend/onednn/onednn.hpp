// blip2/backend/onednn/onednn.hpp: the oneDNN backend with all its kernels (and explicit fallbacks).
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/onednn/layer_norm.hpp"
