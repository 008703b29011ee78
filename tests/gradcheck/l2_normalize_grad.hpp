// Finite-difference checks for l2_normalize (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_l2_normalize_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
