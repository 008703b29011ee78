// tests/harness/expect_error.hpp: checking that a call fails with the right error and a useful message.
//
//   message_of<E>(f)  runs f, which must throw E, and returns the message; a failed check (and "")
//                     when f throws nothing or another exception type.
//   has(text, part)   whether part appears in text.
#pragma once
#include <doctest/doctest.h>

#include <exception>
#include <string>

namespace blip2::testing {

template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw another exception type than expected: ", e.what());
    return {};
  }
  FAIL_CHECK("did not throw");
  return {};
}

inline bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace blip2::testing
