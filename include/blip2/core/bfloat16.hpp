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
#pragma once
#include <bit>
#include <cstdint>

namespace blip2 {

inline float round_to_bf16(float x) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return std::bit_cast<float>((u | 0x00400000u) & 0xFFFF0000u);  // NaN: quiet, kept
  u += 0x7FFFu + ((u >> 16) & 1u);
  return std::bit_cast<float>(u & 0xFFFF0000u);
}

}  // namespace blip2
