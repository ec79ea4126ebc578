#include "qz/core/half.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <cstring>
#include <vector>

#include "qz/core/dtype.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

// Brute-force reference: the fp16 value nearest to x among all finite fp16 values, ties to the even code;
// beyond the largest finite value by half an ulp or more: infinity.
uint16_t reference_fp16(float x) {
  const double v = std::fabs(static_cast<double>(x));
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (v >= 65520.0) return sign | 0x7C00;
  // Binary search the largest positive code whose value <= v (values increase with the code).
  uint16_t lo = 0, hi = 0x7BFF;
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (static_cast<double>(fp16_to_fp32_compute(mid)) <= v) lo = mid;
    else hi = static_cast<uint16_t>(mid - 1);
  }
  const double below = fp16_to_fp32_compute(lo);
  const double above = lo == 0x7BFF ? 65536.0 : static_cast<double>(fp16_to_fp32_compute(static_cast<uint16_t>(lo + 1)));
  uint16_t code = lo;
  if (v - below > above - v || (v - below == above - v && (lo & 1))) code = static_cast<uint16_t>(lo + 1);
  return sign | code;
}

TEST(Half, KnownValues) {
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(fp32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);            // halfway to 65536 rounds to even: infinity
  EXPECT_EQ(fp32_to_fp16(65519.99f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);  // tie between 1 and 2 ulps: even is 2
  EXPECT_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);       // tie, even mantissa
  EXPECT_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);   // tie, rounds up to even
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(std::nanf("")) & 0x7C00, 0x7C00);
  EXPECT_NE(fp32_to_fp16(std::nanf("")) & 0x03FF, 0);
  EXPECT_EQ(fp16_to_fp32(0x3555), 0.333251953125f);
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0xFC00)));
}

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto code = static_cast<uint16_t>(h);
    const float f = fp16_to_fp32(code);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_fp32_compute(code)));
      continue;
    }
    EXPECT_EQ(f, fp16_to_fp32_compute(code));
    ASSERT_EQ(fp32_to_fp16(f), code) << "code " << h;
  }
}

TEST(Half, MatchesBruteForceNearest) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0xFFFFFFFFu);
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    // Bias towards the fp16 range (exponents 100..143) where all the interesting rounding happens.
    b = (b & 0x807FFFFFu) | ((100u + (b >> 23) % 44u) << 23);
    const float x = std::bit_cast<float>(b);
    ASSERT_EQ(fp32_to_fp16(x), reference_fp16(x)) << "x = " << x;
  }
  // Midpoints between neighbouring halves are exact ties.
  for (uint16_t h = 0; h < 0x7BFF; h += 37) {
    const double mid = (static_cast<double>(fp16_to_fp32(h)) + fp16_to_fp32(static_cast<uint16_t>(h + 1))) / 2;
    const float x = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(x), mid);
    ASSERT_EQ(fp32_to_fp16(x), reference_fp16(x));
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, keep even
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, round up to even
  EXPECT_EQ(fp32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(bf16_to_fp32(0xC040), -3.0f);
  EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::nanf("")))));
  for (uint32_t h = 0; h < 65536; h += 3) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) ASSERT_EQ(fp32_to_bf16(f), h);
  }
}

TEST(Half, F16InputConvertsEveryCodeExactlyAtAnyLength) {
  // convert_to_f32 (the F16C path where the CPU has it, 8 at a time, and the table for the tail) against the exact
  // arithmetic conversion, on every non-NaN code, from lengths that end inside and on a group of 8.
  std::vector<uint16_t> codes;
  for (uint32_t h = 0; h < 0x10000; ++h)
    if ((h & 0x7C00u) != 0x7C00u || (h & 0x3FFu) == 0) codes.push_back(static_cast<uint16_t>(h));
  for (size_t n : {codes.size(), codes.size() - 3, size_t{5}}) {
    std::vector<float> out(n);
    convert_to_f32(codes.data(), DType::F16, out.data(), n);
    for (size_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(fp16_to_fp32_compute(codes[i]))) << codes[i];
  }
  uint16_t nan = 0x7E00;
  float f = 0;
  convert_to_f32(&nan, DType::F16, &f, 1);
  EXPECT_TRUE(std::isnan(f));
}

}  // namespace
}  // namespace qz
