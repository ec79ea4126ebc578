// A small deterministic generator (xorshift64 + Box-Muller) for demo checkpoints and tests; the same one
// ../shared/golden/manifest.json describes, so reference inputs can be regenerated bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace qz {

class XorShift64 {
 public:
  explicit XorShift64(uint64_t seed) : x_(seed) {}
  uint64_t next() {
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return x_;
  }
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Standard normal, one value per call (Box-Muller, cosine branch).
  double gauss() {
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  uint64_t x_;
};

}  // namespace qz
