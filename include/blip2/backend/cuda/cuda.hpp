// blip2/backend/cuda/cuda.hpp: the CUDA backend with all its kernels (part blip2::cuda; link it, and
// include this). Every op of the op list has a CUDA kernel here, none a fallback (a host fallback cannot
// read device memory); the conformance test checks both. Device storage (buffer<T, cuda_space>) comes
// from buffer.hpp.
#pragma once
#include "blip2/backend/cuda/cuda_backend.hpp"
#include "blip2/backend/cuda/buffer.hpp"
#include "blip2/backend/cuda/adamw_update.hpp"
#include "blip2/backend/cuda/attention.hpp"
#include "blip2/backend/cuda/axpy.hpp"
#include "blip2/backend/cuda/copy.hpp"
#include "blip2/backend/cuda/cross_entropy.hpp"
#include "blip2/backend/cuda/dropout.hpp"
#include "blip2/backend/cuda/embedding.hpp"
#include "blip2/backend/cuda/gelu.hpp"
#include "blip2/backend/cuda/l2_normalize.hpp"
#include "blip2/backend/cuda/layer_norm.hpp"
#include "blip2/backend/cuda/linear.hpp"
#include "blip2/backend/cuda/linear_bf16.hpp"
#include "blip2/backend/cuda/matmul.hpp"
#include "blip2/backend/cuda/relu.hpp"
#include "blip2/backend/cuda/row_max.hpp"
#include "blip2/backend/cuda/softmax.hpp"
