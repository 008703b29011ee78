// Conformance cases for l2_normalize (to be filled).
#pragma once
#include "harness/backend_ops.hpp"

namespace blip2::testing {
inline void add_l2_normalize_cases(std::vector<op_case>&) {}
}  // namespace blip2::testing
