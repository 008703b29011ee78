// Finite-difference checks for softmax (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_softmax_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
