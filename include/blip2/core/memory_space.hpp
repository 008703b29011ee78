// blip2/core/memory_space.hpp: where a tensor's memory lives, as a type.
//
// A view carries its memory space in its type, so a kernel that takes host views cannot be called with
// device memory: the mismatch is a compile error, not a segfault. A new backend (CUDA) adds a space and
// leaves every call site as it is.
#pragma once
#include <concepts>

namespace blip2 {

struct host_space {
  static constexpr const char* name = "host";
  static constexpr bool host_accessible = true;
};
struct cuda_space {
  static constexpr const char* name = "cuda";
  static constexpr bool host_accessible = false;
};

template <class S>
concept memory_space = requires {
  { S::name } -> std::convertible_to<const char*>;
  { S::host_accessible } -> std::convertible_to<bool>;
};

}  // namespace blip2
