// blip2/backend/reference/reference_backend.hpp: the readable backend, the oracle for all others.
//
// Plain loops over tensor_views, templated on the scalar so every kernel also runs in double (the
// gradient checks and the conformance tests use that), parallelised with OpenMP when it is enabled.
// Each op's kernel lives in a file of the op's name beside this one.
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/memory_space.hpp"

#if defined(_OPENMP)
#include <omp.h>
#define BLIP2_OMP_FOR _Pragma("omp parallel for schedule(static)")
#define BLIP2_OMP_FOR_COLLAPSE2 _Pragma("omp parallel for collapse(2) schedule(static)")
#else
#define BLIP2_OMP_FOR
#define BLIP2_OMP_FOR_COLLAPSE2
#endif

namespace blip2 {

struct reference_backend {
  using memory_space = host_space;
  static constexpr const char* name = "reference";
};

}  // namespace blip2
