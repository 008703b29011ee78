// blip2/core/errors.hpp: the library's exception types and the BLIP2_CHECK macro.
//
// Every public entry checks its arguments with BLIP2_CHECK (always on, also in release builds) and
// throws one of these; the library never calls exit() or abort().
//   shape_error    a tensor has the wrong rank or extents (the message names both shapes)
//   value_error    an argument is out of its domain (an id outside the vocabulary, p outside [0,1))
//   format_error   a file is not what it claims (file, offset, what was expected)
//   backend_error  a backend failed (oneDNN status, CUDA error)
//   communication_error  a collective between processes failed (an MPI error, a rank that disagrees)
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace blip2 {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct shape_error : error {
  using error::error;
};
struct value_error : error {
  using error::error;
};
struct format_error : error {
  using error::error;
};
struct backend_error : error {
  using error::error;
};
struct communication_error : error {
  using error::error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
template <class Error, class... Parts>
[[noreturn]] void raise(Parts&&... parts) {
  throw Error(concat(std::forward<Parts>(parts)...));
}
}  // namespace detail
}  // namespace blip2

// BLIP2_CHECK(condition, error_type, message parts...): throws error_type with the parts streamed
// together, e.g. BLIP2_CHECK(p < 1, blip2::value_error, "dropout: p = ", p, " must be in [0, 1)").
#define BLIP2_CHECK(cond, error_type, ...)                 \
  do {                                                     \
    if (!(cond)) ::blip2::detail::raise<error_type>(__VA_ARGS__); \
  } while (0)
