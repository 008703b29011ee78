// blip2/backend/reference/base.hpp: the reference backend's type, the explicit fallback to it, and the
// OpenMP loop macros: what every reference kernel file builds on. Include reference_backend.hpp to use
// the backend (it brings every kernel).
#pragma once
#include "blip2/backend/backend.hpp"
#include "blip2/core/memory_space.hpp"

#include <utility>

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

// The explicit fallback: run the reference kernel on a host backend's views.
template <class Op>
struct reference_fallback {
  static constexpr bool is_fallback = true;
  template <class Backend, class... Args>
  static void run(Backend&, Args&&... args) {
    static_assert(Backend::memory_space::host_accessible,
                  "blip2::reference_fallback: only a host backend can fall back to the reference kernels");
    reference_backend ref;
    kernel<reference_backend, Op>::run(ref, std::forward<Args>(args)...);
  }
};

}  // namespace blip2
