#include "qz/core/finite.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qz/core/parallel.hpp"

namespace qz {

// A branch-free pass (vectorized: an exponent of all ones is NaN or Inf) says whether there is one; only then the
// index is looked for.
[[gnu::target_clones("avx2", "default")]] size_t first_non_finite(const float* x, size_t n) {
  uint32_t any = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    any |= static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  if (any == 0) return SIZE_MAX;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return SIZE_MAX;
}

size_t first_non_finite(const float* x, size_t n, unsigned threads) {
  constexpr size_t kPieces = 16, kMinPiece = size_t{1} << 18;
  if (threads <= 1 || n < kPieces * kMinPiece) return first_non_finite(x, n);
  std::vector<size_t> first(kPieces, SIZE_MAX);
  parallel_for(kPieces, threads, [&](size_t p, unsigned) {
    const size_t b = n * p / kPieces, e = n * (p + 1) / kPieces;
    if (const size_t i = first_non_finite(x + b, e - b); i != SIZE_MAX) first[p] = b + i;
  });
  return *std::min_element(first.begin(), first.end());
}

}  // namespace qz
