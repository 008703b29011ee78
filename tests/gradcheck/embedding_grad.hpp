// Finite-difference checks for embedding (to be filled).
#pragma once
#include "harness/gradcheck.hpp"

namespace blip2::testing {
inline void add_embedding_grads(std::vector<grad_case>&) {}
}  // namespace blip2::testing
