// blip2/io/utf8.hpp: strict UTF-8 validation (RFC 3629), for file headers read from untrusted bytes.
//
// Rejected: stray continuation bytes, truncated sequences, overlong encodings (C0, C1, E0 80..9F,
// F0 80..8F), UTF-16 surrogates (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..FF).
// This is what Rust's core::str::from_utf8 accepts, which the safetensors reference relies on.
#pragma once
#include <cstddef>
#include <string_view>

namespace blip2 {

// Offset of the first byte that does not start (or continue) a valid sequence; npos when all of `s`
// is valid UTF-8.
constexpr std::size_t utf8_invalid_offset(std::string_view s) noexcept {
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {  // ASCII
      ++i;
      continue;
    }
    // Sequence length and the allowed range of the second byte (narrower than 80..BF for E0, ED, F0,
    // F4 so that overlongs, surrogates and code points past U+10FFFF are excluded).
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    } else {
      return i;  // 80..BF (stray continuation), C0, C1 (overlong), F5..FF (beyond U+10FFFF)
    }
    if (n - i < len) return i;  // truncated at the end of the input
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < 0x80 || b > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

constexpr bool is_valid_utf8(std::string_view s) noexcept {
  return utf8_invalid_offset(s) == std::string_view::npos;
}

}  // namespace blip2
