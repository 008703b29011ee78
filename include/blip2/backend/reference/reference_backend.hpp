// blip2/backend/reference/reference_backend.hpp: the readable backend, the oracle for all others, with
// every kernel.
//
// Plain loops over tensor_views, templated on the scalar so every kernel also runs in double (the
// gradient checks and the conformance tests use that), parallelised with OpenMP when it is enabled.
// Each op's kernel lives in a file of the op's name beside this one; this header registers them all, so
// the public ops (which include only backend.hpp and core/) find a kernel for reference_backend.
// The type itself and reference_fallback are in base.hpp.
#pragma once
#include "blip2/backend/reference/base.hpp"
#include "blip2/backend/reference/adamw_update.hpp"
#include "blip2/backend/reference/attention.hpp"
#include "blip2/backend/reference/axpy.hpp"
#include "blip2/backend/reference/copy.hpp"
#include "blip2/backend/reference/cross_entropy.hpp"
#include "blip2/backend/reference/dropout.hpp"
#include "blip2/backend/reference/embedding.hpp"
#include "blip2/backend/reference/fill.hpp"
#include "blip2/backend/reference/gelu.hpp"
#include "blip2/backend/reference/l2_normalize.hpp"
#include "blip2/backend/reference/layer_norm.hpp"
#include "blip2/backend/reference/linear.hpp"
#include "blip2/backend/reference/linear_bf16.hpp"
#include "blip2/backend/reference/matmul.hpp"
#include "blip2/backend/reference/relu.hpp"
#include "blip2/backend/reference/row_max.hpp"
#include "blip2/backend/reference/softmax.hpp"
