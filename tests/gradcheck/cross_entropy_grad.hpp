// Finite-difference checks for cross_entropy (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_cross_entropy_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
