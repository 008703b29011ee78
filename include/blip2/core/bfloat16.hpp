// blip2/core/bfloat16.hpp: rounding a float to the nearest bfloat16, kept in a float.
//
// bfloat16 is float32's upper half: the same 8 exponent bits, 7 of the 23 mantissa bits. Rounding to
// nearest, ties to even (what PyTorch's x.bfloat16() and oneDNN's conversions do) adds 0x7FFF plus the
// lowest kept bit to the bit pattern, then clears the low 16 bits. Infinities stay infinite; a value
// above the largest bfloat16 (3.3895e38) by half a unit or more becomes infinite, as in the conversion;
// a NaN stays a NaN (its quiet bit is set, so that the carry cannot turn it into an infinity).
//
// A product of two bfloat16 values (8-bit significands) is exact in float32 (24 bits), so a float32
// matmul over rounded inputs computes what a bf16 x bf16 -> f32 matmul computes, up to summation order.
//
// Stored bfloat16 (weights kept in half the bytes, nn/linear_bf16.hpp): the type bfloat16 holds the 16
// bits; to_float widens exactly (the bits become a float's upper half); to_bfloat16 rounds as above, one
// value or a whole buffer (a branch-free loop the compiler vectorises, split over the OpenMP threads).
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>

namespace blip2 {

inline float round_to_bf16(float x) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return std::bit_cast<float>((u | 0x00400000u) & 0xFFFF0000u);  // NaN: quiet, kept
  u += 0x7FFFu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xFFFF0000u);
}

// A bfloat16 value as stored: the upper 16 bits of the float it stands for.
struct bfloat16 {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(bfloat16, bfloat16) = default;  // bitwise
};

// Exact: every bfloat16 is a float.
constexpr float to_float(bfloat16 b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b.bits) << 16); }

// Nearest bfloat16, ties to even; NaN stays NaN (quiet bit set), as round_to_bf16. Written without a
// branch, so that the buffer version below vectorises.
constexpr bfloat16 to_bfloat16(float x) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bfloat16{static_cast<std::uint16_t>(nan ? quiet_nan : rounded)};
}

// dst[i] = to_bfloat16(src[i]) for i < n (loading float32 weights into bfloat16 storage).
inline void to_bfloat16(const float* src, bfloat16* dst, std::size_t n) {
  constexpr std::ptrdiff_t chunk = 1 << 16;
  const auto size = static_cast<std::ptrdiff_t>(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (size > 4 * chunk)
#endif
  for (std::ptrdiff_t c = 0; c < size; c += chunk) {
    const std::ptrdiff_t end = size - c < chunk ? size : c + chunk;
    for (std::ptrdiff_t i = c; i < end; ++i) dst[i] = to_bfloat16(src[i]);
  }
}

// dst[i] = to_float(src[i]) for i < n.
inline void to_float(const bfloat16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}

}  // namespace blip2
