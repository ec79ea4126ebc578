#include "qz/formats/int_grid.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/methods/rtn.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

// Decodes one block (one group) from its documented layout (int_grid.hpp, docs/formats.md, and ggml's block
// layouts for the grids stored as llama.cpp types), independently of the format's decoder. Every value is
// (u - zero) * d, or u * d + m for the asymmetric grids stored as Q4_1 / Q5_1; u counts from 0 (Q8_0's signed codes
// are shifted by 128).
struct DecodedBlock {
  float d = 0;
  int zero = 0;
  bool with_min = false;
  float m = 0;
  std::vector<int> codes;
  float value(int u) const { return with_min ? static_cast<float>(u) * d + m : static_cast<float>(u - zero) * d; }
};
float half_at(const uint8_t* p) { return fp16_to_fp32_compute(static_cast<uint16_t>(p[0] | (p[1] << 8))); }

DecodedBlock decode_block(const uint8_t* blk, const IntGridSpec& s, size_t n) {
  DecodedBlock b;
  const auto native = native_storage(s, n);
  if (!native) {
    b.d = half_at(blk);
    b.zero = s.symmetric ? (1 << (s.bits - 1)) : blk[2];
    const uint8_t* codes = blk + (s.symmetric ? 2 : 3);
    for (size_t j = 0; j < n; ++j) {
      int v = 0;
      for (int k = 0; k < s.bits; ++k) {
        const size_t bit = j * static_cast<size_t>(s.bits) + static_cast<size_t>(k);
        v |= ((codes[bit / 8] >> (bit % 8)) & 1) << k;
      }
      b.codes.push_back(v);
    }
    return b;
  }
  // ggml: Q4_0 [d][qs 16], Q4_1 [d][m][qs 16], Q5_0 [d][qh 4][qs 16], Q5_1 [d][m][qh 4][qs 16], Q8_0 [d][i8 32];
  // qs[j] holds element j (low nibble) and j + 16 (high nibble), bit j of qh the fifth bit of element j.
  const bool with_min = *native == GgmlType::Q4_1 || *native == GgmlType::Q5_1;
  const bool five = *native == GgmlType::Q5_0 || *native == GgmlType::Q5_1;
  const size_t bytes = *native == GgmlType::Q8_0 ? 34 : 18 + (with_min ? 2 : 0) + (five ? 4 : 0);
  b.d = half_at(blk);
  b.with_min = with_min;
  b.m = with_min ? half_at(blk + 2) : 0.0f;
  b.zero = *native == GgmlType::Q8_0 ? 128 : with_min ? 0 : five ? 16 : 8;
  for (size_t k = 0; k < n / 32; ++k) {
    const uint8_t* sub = blk + k * bytes;
    EXPECT_EQ(half_at(sub), b.d) << "every block of 32 repeats the group's scale";
    if (with_min) EXPECT_EQ(half_at(sub + 2), b.m);
    for (size_t j = 0; j < 32; ++j) {
      if (*native == GgmlType::Q8_0) {
        b.codes.push_back(static_cast<int8_t>(sub[2 + j]) + 128);
        continue;
      }
      const uint8_t* qs = sub + bytes - 16;
      int v = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
      if (five) v |= ((sub[2 + (with_min ? 2 : 0) + j / 8] >> (j % 8)) & 1) << 4;
      b.codes.push_back(v);
    }
  }
  return b;
}

TEST(IntGrid, GridsLlamaCppHoldsExactlyAreStoredInItsTypes) {
  using G = Granularity;
  EXPECT_EQ(native_storage({4, true, G::Group, 128}, 0), GgmlType::Q4_0);
  EXPECT_EQ(native_storage({4, false, G::Group, 32}, 0), GgmlType::Q4_1);
  EXPECT_EQ(native_storage({5, true, G::Group, 64}, 0), GgmlType::Q5_0);
  EXPECT_EQ(native_storage({5, false, G::Group, 256}, 0), GgmlType::Q5_1);
  EXPECT_EQ(native_storage({8, true, G::Group, 32}, 0), GgmlType::Q8_0);
  EXPECT_EQ(native_storage({8, false, G::Group, 32}, 0), std::nullopt);  // no 8-bit type with a min
  EXPECT_EQ(native_storage({3, true, G::Group, 32}, 0), std::nullopt);
  EXPECT_EQ(native_storage({6, false, G::Group, 64}, 0), std::nullopt);
  EXPECT_EQ(native_storage({4, true, G::Group, 48}, 0), std::nullopt);   // not a multiple of 32
  EXPECT_EQ(native_storage({4, false, G::Row, 0}, 96), GgmlType::Q4_1);  // the row length decides
  EXPECT_EQ(native_storage({4, false, G::Row, 0}, 100), std::nullopt);
  EXPECT_EQ(native_storage({4, true, G::Tensor, 0}, 64), GgmlType::Q4_0);
  const auto f = make_int_format({4, true, G::Group, 128}, 0);
  EXPECT_EQ(f->storage_type(), GgmlType::Q4_0);
  EXPECT_TRUE(f->llama_native());
  EXPECT_EQ(f->stored_parts({256, 2})[0].ne, (std::vector<uint64_t>{256, 2}));  // a plain Q4_0 tensor
  EXPECT_FALSE(make_int_format({3, true, G::Group, 128}, 0)->llama_native());
}

// The grid stored as Q4_0 / Q4_1 / ... reads back through llama.cpp's own decoders (the table's Q4_0 format, which
// the format tests check against llama.cpp) as exactly the values the grid's dequantize_value promises.
TEST(IntGrid, ANativelyStoredGridDecodesThroughTheTypesOwnDecoder) {
  for (const IntGridSpec s : {IntGridSpec{4, true, Granularity::Group, 64}, IntGridSpec{4, false, Granularity::Group, 128},
                              IntGridSpec{5, true, Granularity::Group, 32}, IntGridSpec{5, false, Granularity::Group, 64},
                              IntGridSpec{8, true, Granularity::Group, 128}}) {
    SCOPED_TRACE(int_format_name(s));
    const auto f = make_int_format(s, 0);
    const size_t n = 256;
    const std::vector<float> x = test::gaussian(n, 5);
    std::vector<uint8_t> q(f->row_bytes(n));
    f->quantize_row(x.data(), q.data(), n, nullptr);
    std::vector<float> own(n), theirs(n);
    const auto native = format_for_ggml_type(f->storage_type());
    ASSERT_TRUE(native);
    ASSERT_EQ(native->row_bytes(n), q.size());
    native->dequantize_row(q.data(), theirs.data(), n);
    for (size_t b = 0; b < n / s.group; ++b) {
      BlockGrid g;
      f->fit(x.data() + b * s.group, s.group, nullptr, g);
      for (size_t j = 0; j < s.group; ++j) {
        const size_t i = b * s.group + j;
        own[i] = f->dequantize_value(g, j, f->quantize_value(g, j, x[i]));
      }
    }
    EXPECT_EQ(own, theirs);
  }
}

TEST(IntGrid, NamesRoundTrip) {
  for (const char* n : {"int4_sym_g128", "int8_asym_row", "int3_sym_tensor", "int2_asym_g32"}) {
    const auto s = parse_int_format_name(n);
    ASSERT_TRUE(s) << n;
    EXPECT_EQ(int_format_name(*s), n);
  }
  EXPECT_EQ(parse_int_format_name("INT4_SYM_G64")->group, 64u);
  EXPECT_FALSE(parse_int_format_name("int9_sym_g32"));
  EXPECT_FALSE(parse_int_format_name("int1_sym_g32"));
  EXPECT_FALSE(parse_int_format_name("int4_sym_g0"));
  EXPECT_FALSE(parse_int_format_name("int4_foo_g32"));
  EXPECT_FALSE(parse_int_format_name("int4_sym_g32x"));
  EXPECT_THROW(validate_int_spec({9, true, Granularity::Group, 32}), UsageError);
}

TEST(IntGrid, BitsPerWeightOfTheLayout) {
  // Own layout: [fp16 d][u8 zero if asym][codes] per group; llama.cpp's types: 18 (Q4_0) / 20 (Q4_1) bytes per 32.
  EXPECT_DOUBLE_EQ(make_int_format({4, true, Granularity::Group, 128}, 0)->bits_per_weight(), 18 * 8.0 / 32);
  EXPECT_DOUBLE_EQ(make_int_format({4, false, Granularity::Group, 128}, 0)->bits_per_weight(), 20 * 8.0 / 32);
  EXPECT_DOUBLE_EQ(make_int_format({4, false, Granularity::Group, 48}, 0)->bits_per_weight(), (3 + 24) * 8.0 / 48);
  EXPECT_DOUBLE_EQ(make_int_format({3, true, Granularity::Group, 32}, 0)->bits_per_weight(), (2 + 12) * 8.0 / 32);
  EXPECT_DOUBLE_EQ(make_int_format({8, false, Granularity::Row, 0}, 1000)->bits_per_weight(), (3 + 1000) * 8.0 / 1000);
}

TEST(IntGrid, HandCheckedSymmetricBlock) {
  // 4-bit absmax, one group of 8. max|x| = 0.7, so d = 0.7 / 7 = 0.1, stored as fp16 0x2E66 = 0.0999755859375.
  // q = round(x / d): 0.7 -> 7.0017 -> 7; -0.35 -> -3.5009 -> -4; 0.1 -> 1; 0 -> 0; 0.05 -> 0.5001 -> 1;
  // -0.7 -> -7; 0.2 -> 2; 0.3 -> 3. Stored u = q + 8: 15 4 9 8 9 1 10 11, two per byte, low nibble first.
  const auto f = make_int_format({4, true, Granularity::Group, 8}, 0);
  const float x[8] = {0.7f, -0.35f, 0.1f, 0.0f, 0.05f, -0.7f, 0.2f, 0.3f};
  uint8_t out[6];
  f->quantize_row(x, out, 8, nullptr);
  const uint8_t expected[6] = {0x66, 0x2E, 0x4F, 0x89, 0x19, 0xBA};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], expected[i]) << "byte " << i;
  float y[8];
  f->dequantize_row(out, y, 8);
  EXPECT_FLOAT_EQ(y[1], -4 * 0.0999755859375f);
  EXPECT_FLOAT_EQ(y[4], 0.0999755859375f);
}

TEST(IntGrid, HandCheckedAsymmetricBlock) {
  // 2-bit zero-point, one group of 4: lo = -1, hi = 2, d = 3 / 3 = 1 (fp16 0x3C00), zero = round(1 / 1) = 1,
  // u = x + 1 = 0 1 2 3, packed LSB-first: 0 | 1<<2 | 2<<4 | 3<<6 = 0xE4.
  const auto f = make_int_format({2, false, Granularity::Group, 4}, 0);
  const float x[4] = {-1.0f, 0.0f, 1.0f, 2.0f};
  uint8_t out[4];
  f->quantize_row(x, out, 4, nullptr);
  EXPECT_EQ(out[0], 0x00);
  EXPECT_EQ(out[1], 0x3C);
  EXPECT_EQ(out[2], 1);
  EXPECT_EQ(out[3], 0xE4);
}

TEST(IntGrid, HandCheckedThreeBitPacking) {
  // 3-bit absmax (q in -3..3, u = q + 4), x = 3 -3 2 -2 1 -1 0 3: d = 1, u = 7 1 6 2 5 3 4 7.
  // Bit stream sum(u_j << 3j) = 0xF1D58F, little-endian bytes 8F D5 F1 (codes straddle byte boundaries).
  const auto f = make_int_format({3, true, Granularity::Group, 8}, 0);
  const float x[8] = {3, -3, 2, -2, 1, -1, 0, 3};
  uint8_t out[5];
  f->quantize_row(x, out, 8, nullptr);
  EXPECT_EQ(out[0], 0x00);
  EXPECT_EQ(out[1], 0x3C);
  EXPECT_EQ(out[2], 0x8F);
  EXPECT_EQ(out[3], 0xD5);
  EXPECT_EQ(out[4], 0xF1);
}

struct BoundCase {
  int bits;
  bool sym;
  size_t group;
};

class IntGridBound : public ::testing::TestWithParam<BoundCase> {};

// |x - x^| <= d/2 for every value inside the grid's range (the closed-form bound of round-to-nearest), where d is
// the stored scale, and the decoder agrees with the documented layout.
TEST_P(IntGridBound, ErrorWithinHalfAStepInsideTheRange) {
  const auto [bits, sym, group] = GetParam();
  const IntGridSpec spec{bits, sym, Granularity::Group, group};
  const auto f = make_int_format(spec, 0);
  const size_t n = group * 16;
  std::vector<float> x = test::gaussian(n, static_cast<uint32_t>(bits * 100 + group));
  for (size_t i = 0; i < n; i += 37) x[i] *= 8.0f;  // outliers
  for (size_t i = 0; i < group; ++i) x[group + i] = std::fabs(x[group + i]);  // an all-positive group
  std::vector<uint8_t> q(f->row_bytes(n));
  f->quantize_row(x.data(), q.data(), n, nullptr);
  std::vector<float> y(n);
  f->dequantize_row(q.data(), y.data(), n);
  const int maxq = (1 << bits) - 1;
  for (size_t b = 0; b < n / group; ++b) {
    const DecodedBlock blk = decode_block(q.data() + b * f->block_bytes(), spec, group);
    for (size_t j = 0; j < group; ++j) {
      const size_t i = b * group + j;
      ASSERT_EQ(y[i], blk.value(blk.codes[j]));
      const int lo = sym ? 1 : 0;
      ASSERT_GE(blk.codes[j], lo);
      ASSERT_LE(blk.codes[j], maxq);
      const double range_lo = blk.value(lo) - 0.5 * blk.d, range_hi = blk.value(maxq) + 0.5 * blk.d;
      if (x[i] >= range_lo && x[i] <= range_hi)
        ASSERT_LE(std::fabs(x[i] - y[i]), blk.d * 0.5 * (1 + 1e-5) + 1e-12) << "block " << b << " j " << j;
      // The range always covers the block up to fp16 rounding of d (and of zero for asym: one extra step).
      ASSERT_LE(std::fabs(x[i] - y[i]), blk.d * (sym ? 0.5 + 0.01 * maxq : 1.0 + 0.01 * maxq));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllWidths, IntGridBound,
                         ::testing::Values(BoundCase{2, true, 32}, BoundCase{2, false, 32}, BoundCase{3, true, 64},
                                           BoundCase{3, false, 64}, BoundCase{4, true, 128}, BoundCase{4, false, 128},
                                           BoundCase{5, true, 32}, BoundCase{5, false, 32}, BoundCase{6, true, 64},
                                           BoundCase{6, false, 64}, BoundCase{7, true, 128}, BoundCase{7, false, 32},
                                           BoundCase{8, true, 64}, BoundCase{8, false, 128}));

TEST(IntGrid, PerTensorGridIsSharedByEveryRow) {
  const size_t rows = 5, cols = 48;
  const auto f = make_int_format({4, true, Granularity::Tensor, 0}, cols);
  EXPECT_EQ(f->scope(), GridScope::Tensor);
  std::vector<float> x = test::gaussian(rows * cols, 3);
  x[100] = 0.5f;  // the tensor's max
  const BlockGrid g = rtn_fit_tensor(*f, x.data(), x.size());
  std::vector<uint8_t> q(rows * f->row_bytes(cols));
  rtn_quantize_rows(*f, x.data(), rows, cols, nullptr, &g, q.data());
  for (size_t r = 0; r < rows; ++r) {
    const DecodedBlock b = decode_block(q.data() + r * f->row_bytes(cols), {4, true, Granularity::Tensor, 0}, cols);
    EXPECT_EQ(b.d, fp16_to_fp32(fp32_to_fp16(0.5f / 7)));
  }
}

}  // namespace
}  // namespace qz
