// Finite-difference checks for row_max (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_row_max_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
