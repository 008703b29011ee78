// Finite-difference checks for linear (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_linear_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
