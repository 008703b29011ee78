// Conformance cases for gelu (to be filled).
#pragma once
#include "harness/backend_ops.hpp"

namespace blip2::testing {
inline void add_gelu_cases(std::vector<op_case>&) {}
}  // namespace blip2::testing
