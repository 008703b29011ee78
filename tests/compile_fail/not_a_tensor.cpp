// compile_fail_not_a_tensor: blip2::view of a type that is not a tensor must not compile, and the error
// must say so. std::vector<float> has .data() but no .shape(): no rank, no extents.
// Expected diagnostic: "is not a tensor".
#include <vector>

#include "blip2/core/view.hpp"

int main() {
  std::vector<float> v(6, 1.0f);
  blip2::view(v);
}
