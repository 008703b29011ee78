// blip2/io/utf8.hpp: strict UTF-8 validation and decoding (RFC 3629), for text read from untrusted bytes.
//
// Rejected: stray continuation bytes, truncated sequences, overlong encodings (C0, C1, E0 80..9F,
// F0 80..8F), UTF-16 surrogates (ED A0..BF) and code points above U+10FFFF (F4 90.., F5..FF).
// This is what Rust's core::str::from_utf8 accepts, which the safetensors reference relies on.
//
// utf8_decode_step() decodes one code point or reports the length of the "maximal subpart" of an invalid
// sequence (Unicode's recommended practice, chapter 3 "U+FFFD Substitution of Maximal Subparts"), which is
// exactly what Python's bytes.decode("utf-8", errors="replace") turns into one U+FFFD each.
// utf8_decode_lossy() does that for a whole string; utf8_append() encodes a code point.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace blip2 {

struct utf8_step {
  char32_t code_point = 0;  // the decoded code point, U+FFFD when !valid
  std::size_t length = 0;   // bytes consumed (>= 1 whenever the input is not empty)
  bool valid = false;       // false: `length` bytes form one maximal invalid subpart
};

// Decodes the sequence starting at s[i] (i < s.size()).
constexpr utf8_step utf8_decode_step(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1, true};  // ASCII
  // Sequence length, payload bits of the lead byte, and the allowed range of the second byte (narrower than
  // 80..BF for E0, ED, F0, F4 so that overlongs, surrogates and code points past U+10FFFF are excluded).
  std::size_t len = 0;
  char32_t cp = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0Fu;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07u;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0xFFFD, 1, false};  // 80..BF (stray continuation), C0, C1 (overlong), F5..FF (beyond U+10FFFF)
  }
  for (std::size_t k = 1; k < len; ++k) {
    // the prefix read so far is a maximal subpart when the input ends or the next byte does not continue it
    if (i + k >= n) return {0xFFFD, k, false};
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char klo = k == 1 ? lo : 0x80, khi = k == 1 ? hi : 0xBF;
    if (b < klo || b > khi) return {0xFFFD, k, false};
    cp = (cp << 6) | (b & 0x3Fu);
  }
  return {cp, len, true};
}

// Offset of the first byte that does not start (or continue) a valid sequence; npos when all of `s`
// is valid UTF-8.
constexpr std::size_t utf8_invalid_offset(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const auto step = utf8_decode_step(s, i);
    if (!step.valid) return i;
    i += step.length;
  }
  return std::string_view::npos;
}

constexpr bool is_valid_utf8(std::string_view s) noexcept {
  return utf8_invalid_offset(s) == std::string_view::npos;
}

// Decodes `s`, each maximal invalid subpart becoming one U+FFFD (as Python's errors="replace").
inline std::u32string utf8_decode_lossy(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto step = utf8_decode_step(s, i);
    out.push_back(step.code_point);
    i += step.length;
  }
  return out;
}

// Appends the UTF-8 encoding of cp (a Unicode scalar value: not a surrogate, <= U+10FFFF).
inline void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace blip2
