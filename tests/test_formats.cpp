// The format table and the interface every format implements.
#include <gtest/gtest.h>

#include <cmath>

#include "qz/formats/format_table.hpp"
#include "qz/io/ggml_types.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

std::vector<FormatPtr> all_formats() {
  std::vector<FormatPtr> out;
  for (const auto& e : format_table())
    if (!e.family()) out.push_back(e.format);
  for (const char* n : {"int4_sym_g32", "int4_asym_g64", "int3_sym_g128", "int8_asym_g32", "int2_sym_g64",
                        "int5_asym_g32", "int6_sym_row", "int7_asym_row"})
    out.push_back(find_format(n, 256));
  return out;
}

TEST(FormatTable, EntriesAgreeWithGgmlTypeTraits) {
  for (const auto& e : format_table()) {
    SCOPED_TRACE(std::string(e.name));
    if (e.family()) {
      EXPECT_FALSE(e.ggml.has_value());
      continue;
    }
    ASSERT_TRUE(e.ggml.has_value());
    const auto& tr = ggml_type_traits(*e.ggml);
    EXPECT_EQ(e.format->block_size(), tr.block_size);
    EXPECT_EQ(e.format->block_bytes(), tr.type_size);
    EXPECT_DOUBLE_EQ(e.bits_per_weight, e.format->bits_per_weight());
    EXPECT_EQ(e.format->storage_type(), *e.ggml);
    EXPECT_EQ(find_format(e.name), e.format);
    EXPECT_EQ(format_for_ggml_type(*e.ggml), e.format);
  }
  EXPECT_DOUBLE_EQ(find_format("q8_0")->bits_per_weight(), 8.5);
  EXPECT_DOUBLE_EQ(find_format("F16")->bits_per_weight(), 16.0);
  EXPECT_EQ(find_format("nope"), nullptr);
  EXPECT_EQ(find_format("int4_sym_row"), nullptr);  // per-row grids need the row length
}

TEST(FormatTable, FamiliesResolveTheirNames) {
  const FormatPtr grid = find_format("INT3_SYM_G128");
  ASSERT_NE(grid, nullptr);
  EXPECT_EQ(grid->name(), "int3_sym_g128");
  EXPECT_EQ(grid->bits_per_weight(), (2 + 48) * 8.0 / 128);  // fp16 d + 128 three-bit codes per group
  const FormatPtr nf4 = find_format("nf4_b64_dq");
  ASSERT_NE(nf4, nullptr);
  EXPECT_TRUE(nf4->whole_tensor());
  EXPECT_FALSE(grid->whole_tensor());
  EXPECT_DOUBLE_EQ(nf4->bits_per_weight(), 4.0 + 8.0 / 64 + 32.0 / (64 * 256));
  EXPECT_EQ(find_format("nf4_b100"), nullptr);  // not a power of two
  // Parts of a 3 x 100 NF4 tensor: 150 code bytes; 5 blocks of 64 -> 5 quantized absmax, 1 nested absmax, 1 offset.
  const auto parts = nf4->stored_parts({100, 3});
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(parts[0].bytes, 150u);
  EXPECT_EQ(parts[1].suffix, ".absmax");
  EXPECT_EQ(parts[1].bytes, 5u);
  EXPECT_EQ(parts[2].bytes, 4u);
  EXPECT_EQ(parts[3].bytes, 4u);
  EXPECT_EQ(nf4->stored_bytes({100, 3}), 163u);
  // Row formats: one part; custom I8 layouts count ne[0] in bytes.
  const auto gp = grid->stored_parts({256, 4});
  ASSERT_EQ(gp.size(), 1u);
  EXPECT_EQ(gp[0].ne, (std::vector<uint64_t>{2 * 50, 4}));
  EXPECT_EQ(gp[0].bytes, 4u * 2 * 50);
  EXPECT_EQ(find_format("Q4_0")->stored_parts({64, 2})[0].ne, (std::vector<uint64_t>{64, 2}));
  for (const auto& e : format_table())
    EXPECT_NE(known_format_names().find(std::string(e.name)), std::string::npos) << e.name;
}

// For every format: quantize_row equals fit + quantize_value + encode, and dequantize_value equals
// dequantize_row. This is what lets a method with error feedback (GPTQ) target any format.
// quantize_row(x) against fit + quantize_value + encode of each block, and the decoded values against
// dequantize_value.
void expect_fast_path_equals_grid_path(const Format& f, const std::vector<float>& x) {
  const size_t n = x.size();
  std::vector<uint8_t> fast(f.row_bytes(n)), slow(f.row_bytes(n));
  f.quantize_row(x.data(), fast.data(), n, nullptr);
  std::vector<float> y(n);
  f.dequantize_row(fast.data(), y.data(), n);
  const size_t bs = f.block_size();
  std::vector<int32_t> codes(bs);
  for (size_t b = 0; b < n / bs; ++b) {
    BlockGrid g;
    f.fit(x.data() + b * bs, bs, nullptr, g);
    for (size_t j = 0; j < bs; ++j) {
      codes[j] = f.quantize_value(g, j, x[b * bs + j]);
      ASSERT_EQ(f.dequantize_value(g, j, codes[j]), y[b * bs + j]) << "value " << b * bs + j;
    }
    f.encode(g, codes.data(), slow.data() + b * f.block_bytes());
  }
  EXPECT_EQ(fast, slow);
}

TEST(FormatInterface, FastPathEqualsGridPath) {
  for (const auto& f : all_formats()) {
    SCOPED_TRACE(f->name());
    std::vector<float> x = test::gaussian(256, 11, 0.05f);
    x[7] = 0.9f;
    x[200] = -1.3f;
    expect_fast_path_equals_grid_path(*f, x);
  }
}

// Inputs where a vectorized fast path could part from the sequential reference: signed zeros as a block's minimum
// or maximum (which zero comes first decides the stored sign bit), equal magnitudes of both signs (the first one
// sets Q4_0's scale), values that land exactly on a half after scaling (roundf rounds them away from zero), and an
// all-zero block.
TEST(FormatInterface, FastPathEqualsGridPathOnSignedZerosAndHalves) {
  std::vector<float> x(256, 0.0f);
  for (int j = 0; j < 32; ++j) x[j] = j % 2 ? 0.0f : -0.0f;  // block 0: -0 first, all zeros
  for (int j = 32; j < 64; ++j) x[j] = static_cast<float>(j - 32) * 0.25f;
  x[32] = 0.5f;
  x[33] = -0.0f;
  x[40] = 0.0f;  // block 1: minimum -0 first, +0 later in another lane
  for (int j = 64; j < 96; ++j) x[j] = -static_cast<float>(j - 64) * 0.125f;
  x[64] = -0.5f;
  x[65] = -0.0f;
  x[72] = 0.0f;  // block 2: maximum -0 first, +0 later in another lane
  for (int j = 96; j < 128; ++j) x[j] = static_cast<float>(j - 96) - 15.5f;  // halves; Q8_0: d = 127/127
  x[96] = 127.0f;
  x[127] = -127.0f;
  for (int j = 128; j < 160; ++j) x[j] = (j % 3 ? 1.0f : -1.0f) * static_cast<float>(j % 7) * 0.5f;
  x[130] = -3.0f;
  x[131] = 3.0f;  // equal magnitudes of both signs, negative first
  // block 5..7: all +0 (the all-zero block)
  for (const auto& f : all_formats()) {
    SCOPED_TRACE(f->name());
    expect_fast_path_equals_grid_path(*f, x);
  }
}

// Rounding on a fixed grid picks the nearest representable value: no other code of the block is closer.
// code_neighbours (GPTQ's refinement asks it of every value; the final formats inline their own calls) gives, for
// each position, the value of its code and of the codes one up and one down, NaN exactly where quantize_value does
// not give that code back: at the grid's ends at least (codes of the block's extreme values).
TEST(FormatInterface, CodeNeighboursAreTheValuesOfTheCodesAroundAndNaNOffTheGrid) {
  for (const auto& f : all_formats()) {
    if (f->whole_tensor() || !f->is_quantized()) continue;
    SCOPED_TRACE(f->name());
    const size_t bs = f->block_size();
    const std::vector<float> x = test::gaussian(bs, 9, 0.1f);
    BlockGrid g;
    f->fit(x.data(), bs, nullptr, g);
    std::vector<int32_t> codes(bs);
    for (size_t j = 0; j < bs; ++j) codes[j] = f->quantize_value(g, j, x[j]);
    std::vector<float> value(bs), up(bs), down(bs);
    f->code_neighbours(g, 0, bs, codes.data(), value.data(), up.data(), down.data());
    size_t off_grid = 0;
    for (size_t j = 0; j < bs; ++j) {
      EXPECT_EQ(value[j], f->dequantize_value(g, j, codes[j])) << j;
      for (const int step : {1, -1}) {
        const float got = step > 0 ? up[j] : down[j];
        const float v = f->dequantize_value(g, j, codes[j] + step);
        if (f->quantize_value(g, j, v) == codes[j] + step) {
          EXPECT_EQ(got, v) << j << " " << step;
        } else {
          EXPECT_TRUE(std::isnan(got)) << j << " " << step;
          ++off_grid;
        }
      }
    }
    EXPECT_GT(off_grid, 0u) << "the block's extremes sit at the grid's ends";
    // One position at a time, from an offset, as the refinement asks after a move.
    float v1, u1, d1;
    f->code_neighbours(g, bs / 2, 1, &codes[bs / 2], &v1, &u1, &d1);
    EXPECT_EQ(v1, value[bs / 2]);
    EXPECT_TRUE(u1 == up[bs / 2] || (std::isnan(u1) && std::isnan(up[bs / 2])));
    EXPECT_TRUE(d1 == down[bs / 2] || (std::isnan(d1) && std::isnan(down[bs / 2])));
  }
}

TEST(FormatInterface, QuantizeValueIsNearestOnTheGrid) {
  struct Case {
    const char* name;
    int lo, hi;       // valid codes
    float tolerance;  // in steps
  };
  // Q8_0 rounds with the unrounded scale but decodes with the fp16 one: up to 127 * 2^-11 of a step apart.
  for (const Case c : {Case{"Q8_0", -127, 127, 0.07f}, Case{"int4_sym_g32", 1, 15, 1e-4f},
                       Case{"int3_asym_g32", 0, 7, 1e-4f}}) {
    SCOPED_TRACE(c.name);
    const auto f = find_format(c.name, 32);
    std::vector<float> x = test::gaussian(32, 5, 0.1f);
    BlockGrid g;
    f->fit(x.data(), 32, nullptr, g);
    const float step = std::fabs(f->dequantize_value(g, 0, c.lo + 1) - f->dequantize_value(g, 0, c.lo));
    for (float p : test::gaussian(500, 6, 0.15f)) {  // includes values outside the fitted range
      const float got = f->dequantize_value(g, 0, f->quantize_value(g, 0, p));
      float best = INFINITY;
      for (int code = c.lo; code <= c.hi; ++code) best = std::min(best, std::fabs(f->dequantize_value(g, 0, code) - p));
      ASSERT_LE(std::fabs(got - p), best + c.tolerance * step) << "probe " << p;
    }
  }
}

}  // namespace
}  // namespace qz
