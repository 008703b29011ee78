// Finite-difference checks for dropout (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_dropout_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
