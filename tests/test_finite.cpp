// core/finite: the first NaN/Inf of float data, at every position and whatever the thread count.
#include "qz/core/finite.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "test_util.hpp"

namespace qz {
namespace {

const float kBad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()};

TEST(Finite, FirstNonFiniteFindsTheFirstAtEveryPosition) {
  for (size_t n : {1u, 7u, 8u, 9u, 33u, 100u}) {
    std::vector<float> x = test::gaussian(n, 5);
    x[0] = std::numeric_limits<float>::max();  // the largest finite value, and a subnormal, are finite
    if (n > 1) x[1] = std::numeric_limits<float>::denorm_min();
    EXPECT_EQ(first_non_finite(x.data(), n), SIZE_MAX) << n;
    for (size_t p = 0; p < n; ++p)
      for (float b : kBad) {
        std::vector<float> v = x;
        v[p] = b;
        if (p + 3 < n) v[p + 3] = kBad[0];  // a later one does not count
        EXPECT_EQ(first_non_finite(v.data(), n), p) << n << " " << p;
      }
  }
}

// Large enough for the threaded pieces (16 of at least 2^18 values): the first bad value wins even when a later
// piece, which a second thread may check first, holds one too.
TEST(Finite, ThreadedCheckFindsTheSameFirstValueForAnyThreadCount) {
  const size_t n = (size_t{16} << 18) + 12345;
  std::vector<float> x(n, 0.5f);
  for (unsigned threads : {1u, 2u, 3u, 8u}) EXPECT_EQ(first_non_finite(x.data(), n, threads), SIZE_MAX) << threads;
  for (size_t p : {size_t{0}, size_t{5} << 18, n / 2 + 3, n - 1}) {
    std::vector<float> v = x;
    v[p] = kBad[(p / 7) % 3];
    if (p + 1 < n) v[n - 1] = kBad[0];  // a later one, in the last piece
    for (unsigned threads : {1u, 2u, 3u, 8u}) EXPECT_EQ(first_non_finite(v.data(), n, threads), p) << p << " " << threads;
  }
}

}  // namespace
}  // namespace qz
