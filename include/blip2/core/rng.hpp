// blip2/core/rng.hpp: a counter-based random number generator (Philox-4x32-10, Salmon et al. 2011).
//
// A draw is a pure function of (seed, counter): element i of a dropout mask is decided by
// philox(seed, i) alone, so the same seed gives the same mask whatever the thread count or the order
// of the loop, and a backward pass can regenerate the mask instead of storing it.
#pragma once
#include <array>
#include <cstdint>

namespace blip2 {

struct philox4x32 {
  using counter_type = std::array<std::uint32_t, 4>;
  using key_type = std::array<std::uint32_t, 2>;

  static constexpr counter_type round(counter_type c, key_type k) {
    constexpr std::uint64_t m0 = 0xD2511F53u;
    constexpr std::uint64_t m1 = 0xCD9E8D57u;
    const std::uint64_t p0 = m0 * c[0];
    const std::uint64_t p1 = m1 * c[2];
    return {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
            static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
  }

  // Ten rounds with the key schedule of the paper.
  static constexpr counter_type generate(counter_type c, key_type k) {
    for (int r = 0; r < 10; ++r) {
      c = round(c, k);
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    return c;
  }
};

// Four independent 32-bit words for (seed, counter).
constexpr std::array<std::uint32_t, 4> random_bits(std::uint64_t seed, std::uint64_t counter) {
  return philox4x32::generate(
      {static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0u, 0u},
      {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
}

// A uniform float in [0, 1) from 24 random bits: exactly representable, never 1.
constexpr float uniform_float(std::uint64_t seed, std::uint64_t counter) {
  return static_cast<float>(random_bits(seed, counter)[0] >> 8) * (1.0f / 16777216.0f);
}

// A uniform double in [0, 1) from 53 random bits.
constexpr double uniform_double(std::uint64_t seed, std::uint64_t counter) {
  const auto b = random_bits(seed, counter);
  const std::uint64_t x = (static_cast<std::uint64_t>(b[0]) << 21) ^ (b[1] >> 11);
  return static_cast<double>(x & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

}  // namespace blip2
