// Conformance cases for softmax (to be filled).
#pragma once
#include "harness/backend_ops.hpp"

namespace blip2::testing {
inline void add_softmax_cases(std::vector<op_case>&) {}
}  // namespace blip2::testing
