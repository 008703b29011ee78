// blip2/backend/onednn/onednn.hpp: the oneDNN backend with all its kernels (and explicit fallbacks), and
// the reference backend whole (double calls and fallbacks run its kernels; tests compare with it).
#pragma once
#include "blip2/backend/onednn/onednn_backend.hpp"
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/backend/onednn/attention.hpp"
#include "blip2/backend/onednn/axpy.hpp"
#include "blip2/backend/onednn/copy.hpp"
#include "blip2/backend/onednn/cross_entropy.hpp"
#include "blip2/backend/onednn/dropout.hpp"
#include "blip2/backend/onednn/embedding.hpp"
#include "blip2/backend/onednn/fill.hpp"
#include "blip2/backend/onednn/gelu.hpp"
#include "blip2/backend/onednn/l2_normalize.hpp"
#include "blip2/backend/onednn/layer_norm.hpp"
#include "blip2/backend/onednn/linear.hpp"
#include "blip2/backend/onednn/matmul.hpp"
#include "blip2/backend/onednn/row_max.hpp"
#include "blip2/backend/onednn/softmax.hpp"
