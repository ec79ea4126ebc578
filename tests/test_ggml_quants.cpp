#include "qz/formats/legacy_quants.hpp"

#include <gtest/gtest.h>

#include <random>

#include <bit>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/ggml_search.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

TEST(Q8_0, HandCheckedBlock) {
  // x_j = j for j = 0..31: amax = 31, d = 31/127, q_j = round(127 j / 31) (never a tie: 254 j is never 31 mod 62).
  const auto f = make_q8_0_format();
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j);
  BlockQ8_0 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, fp32_to_fp16(31.0f / 127.0f));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(blk.qs[j], static_cast<int>(std::lround(127.0 * j / 31.0))) << j;
  EXPECT_EQ(blk.qs[31], 127);
  float y[32];
  f->dequantize_row(reinterpret_cast<uint8_t*>(&blk), y, 32);
  EXPECT_EQ(y[31], 127.0f * fp16_to_fp32(blk.d));
}

TEST(Q4_0, HandCheckedBlock) {
  // x_j = j - 16 (j = 0..31): the value of largest magnitude is -16, so d = -16 / -8 = 2 and
  // q = min(15, trunc(x / 2 + 8.5)): x = -16 -> 0, x = -1 -> trunc(8.0) = 8, x = 0 -> 8, x = 1 -> trunc(9.0) = 9,
  // x = 15 -> trunc(16.0) -> 15 (clamped). Element j in the low nibble of byte j, element j + 16 in the high one.
  const auto f = make_q4_0_format();
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ4_0 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, 0x4000);  // 2.0 in fp16
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>((j - 16) / 2.0 + 8.5));
    const int hi = std::min(15, static_cast<int>(j / 2.0 + 8.5));
    EXPECT_EQ(blk.qs[j], lo | (hi << 4)) << j;
  }
  EXPECT_EQ(blk.qs[0], 0x80);  // x = -16 -> 0, x = 0 -> 8
  float y[32];
  f->dequantize_row(reinterpret_cast<uint8_t*>(&blk), y, 32);
  EXPECT_EQ(y[0], -16.0f);
  EXPECT_EQ(y[31], 14.0f);  // clamped at q = 15: (15 - 8) * 2
}

TEST(Q4_0, AllZeroBlockStoresNegativeZeroScale) {
  const auto f = make_q4_0_format();
  float x[32] = {};
  BlockQ4_0 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, 0x8000);  // 0 / -8 = -0.0, as llama.cpp writes it
  for (int j = 0; j < 16; ++j) EXPECT_EQ(blk.qs[j], 0x88);
}

TEST(Q5_1, HandCheckedFifthBits) {
  // x_j = j: min 0, max 31, d = 1, q = j exactly; the fifth bit of element j is bit j of qh.
  const auto f = make_q5_1_format();
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j);
  BlockQ5_1 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, 0x3C00);
  EXPECT_EQ(blk.m, 0x0000);
  uint32_t qh;
  std::memcpy(&qh, blk.qh, 4);
  EXPECT_EQ(qh, 0xFFFF0000u);  // elements 16..31 have q >= 16
  for (int j = 0; j < 16; ++j) EXPECT_EQ(blk.qs[j], j | (((j + 16) & 15) << 4)) << j;
}

TEST(Q8_0, AllZeroBlock) {
  const auto f = make_q8_0_format();
  float x[32] = {};
  BlockQ8_0 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(blk.qs[j], 0);
}

bool IsKQuant(GgmlType t) {
  return t == GgmlType::Q2_K || t == GgmlType::Q3_K || t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K;
}

// Bit-exactness against vectors written by llama.cpp itself (../shared/golden, see its manifest.json): every
// legacy type, plain and imatrix-weighted, on Gaussian, outlier and edge-case inputs.
TEST(LegacyQuants, MatchLlamaCppGoldenVectors) {
  const fs::path dir = test::shared_dir() / "golden";
  if (!fs::exists(dir / "manifest.json")) GTEST_SKIP() << "../shared/golden is absent: llama.cpp golden vectors not checked";
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "manifest.json"));
  const size_t rows = manifest["rows"], cols = manifest["cols"];
  int checked = 0;
  for (const auto& e : manifest["files"]) {
    const GgmlType type = static_cast<GgmlType>(e["ggml_type_id"].get<uint32_t>());
    if (type != GgmlType::Q4_0 && type != GgmlType::Q4_1 && type != GgmlType::Q5_0 && type != GgmlType::Q5_1 &&
        type != GgmlType::Q8_0 && !IsKQuant(type))
      continue;
    const auto f = format_for_ggml_type(type);
    ASSERT_NE(f, nullptr);
    SCOPED_TRACE(e["quantized"].get<std::string>());
    const auto in = test::read_bytes(dir / e["input"].get<std::string>());
    ASSERT_EQ(in.size(), rows * cols * 4);
    std::vector<float> x(rows * cols);
    std::memcpy(x.data(), in.data(), in.size());
    std::vector<float> imp;
    if (!e["importance"].is_null()) {
      const auto ib = test::read_bytes(dir / e["importance"].get<std::string>());
      imp.resize(cols);
      std::memcpy(imp.data(), ib.data(), cols * 4);
    }
    std::vector<uint8_t> q(rows * f->row_bytes(cols));
    for (size_t r = 0; r < rows; ++r)
      f->quantize_row(x.data() + r * cols, q.data() + r * f->row_bytes(cols), cols, imp.empty() ? nullptr : imp.data());
    const auto expected = test::read_bytes(dir / e["quantized"].get<std::string>());
    ASSERT_EQ(q, expected);
    std::vector<float> y(rows * cols);
    for (size_t r = 0; r < rows; ++r) f->dequantize_row(q.data() + r * f->row_bytes(cols), y.data() + r * cols, cols);
    const auto deq = test::read_bytes(dir / e["dequantized"].get<std::string>());
    ASSERT_EQ(deq.size(), y.size() * 4);
    ASSERT_EQ(std::memcmp(deq.data(), y.data(), deq.size()), 0);
    ++checked;
  }
  EXPECT_EQ(checked, 10 * 6);
}

TEST(KQuantSearch, LanesAreBitIdenticalToTheScalarSearch) {
  // The scalar search is the one checked against llama.cpp's vectors; the lane version must reproduce it exactly,
  // also for degenerate sub-blocks (all equal, all zero, all positive) mixed with ordinary ones.
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  struct Case { int lanes, n, nmax; float rmin, rdelta; int nstep; bool mad; };
  const Case cases[] = {{8, 32, 15, -1.f, 0.1f, 20, false}, {8, 32, 31, -0.5f, 0.1f, 15, false},
                        {8, 32, 15, -0.9f, 0.05f, 36, false}, {16, 16, 3, -0.5f, 0.1f, 15, true},
                        {16, 16, 3, -0.9f, 0.05f, 36, false}};
  int compared = 0;
  for (const Case& c : cases) {
    for (int trial = 0; trial < 200; ++trial) {
      const size_t total = static_cast<size_t>(c.lanes * c.n);
      std::vector<float> x(total), w(total);
      for (int k = 0; k < c.lanes; ++k) {
        const int kind = (trial + k) % 7;
        for (int i = 0; i < c.n; ++i) {
          float v = g(rng) * (kind == 5 ? 1e-3f : 1.0f);
          if (kind == 0) v = 0.0f;
          if (kind == 1) v = 0.75f;
          if (kind == 2) v = std::fabs(v) + 0.1f;
          if (kind == 3 && i % 5 == 0) v *= 20.0f;
          x[static_cast<size_t>(k * c.n + i)] = v;
          w[static_cast<size_t>(k * c.n + i)] = trial % 2 ? std::fabs(g(rng)) + 0.01f : std::fabs(v) + 0.5f;
        }
      }
      std::vector<uint8_t> L(total), Ls(total);
      std::vector<float> mins(static_cast<size_t>(c.lanes)), scales(static_cast<size_t>(c.lanes)),
          iscale(static_cast<size_t>(c.lanes)), used(static_cast<size_t>(c.lanes));
      bool deg[16];
      ggml::search_qkx_lanes(c.lanes, c.n, c.nmax, x.data(), w.data(), L.data(), mins.data(), scales.data(), c.rmin,
                             c.rdelta, c.nstep, c.mad, iscale.data(), used.data(), deg);
      for (int k = 0; k < c.lanes; ++k) {
        const size_t o = static_cast<size_t>(k * c.n);
        float smin = 0, siscale = 0, sused = 0;
        bool sdeg = false;
        const float sscale =
            c.mad ? ggml::make_qkx2_quants(c.n, c.nmax, x.data() + o, w.data() + o, Ls.data() + o, &smin, c.rmin, c.rdelta, c.nstep, true)
                  : ggml::make_qkx3_quants(c.n, c.nmax, x.data() + o, w.data() + o, Ls.data() + o, &smin, c.rmin,
                                           c.rdelta, c.nstep, &siscale, &sused, &sdeg);
        ASSERT_EQ(std::bit_cast<uint32_t>(scales[static_cast<size_t>(k)]), std::bit_cast<uint32_t>(sscale)) << trial << " lane " << k;
        ASSERT_EQ(std::bit_cast<uint32_t>(mins[static_cast<size_t>(k)]), std::bit_cast<uint32_t>(smin)) << trial << " lane " << k;
        if (!c.mad) {
          ASSERT_EQ(std::bit_cast<uint32_t>(iscale[static_cast<size_t>(k)]), std::bit_cast<uint32_t>(siscale));
          ASSERT_EQ(std::bit_cast<uint32_t>(used[static_cast<size_t>(k)]), std::bit_cast<uint32_t>(sused));
          ASSERT_EQ(deg[k], sdeg);
        }
        ++compared;
      }
      ASSERT_EQ(L, Ls) << trial;
    }
  }
  EXPECT_EQ(compared, 200 * (8 + 8 + 8 + 16 + 16));
}

TEST(KQuantSearch, SymmetricLanesAreBitIdenticalToTheScalarSearch) {
  std::mt19937 rng(12);
  std::normal_distribution<float> g(0.0f, 1.0f);
  int compared = 0;
  for (int nmax : {32, 4, 8, 16}) {
    for (int trial = 0; trial < 200; ++trial) {
      const int lanes = trial % 2 ? 16 : 8, n = trial % 3 ? 16 : 32;
      const size_t total = static_cast<size_t>(lanes * n);
      std::vector<float> x(total), w(total);
      for (int k = 0; k < lanes; ++k)
        for (int i = 0; i < n; ++i) {
          const int kind = (trial + k) % 6;
          float v = g(rng);
          if (kind == 0) v = 0.0f;
          if (kind == 1) v = 1e-17f;
          if (kind == 2) v = std::fabs(v);
          if (kind == 3 && i % 7 == 0) v *= 30.0f;
          x[static_cast<size_t>(k * n + i)] = v;
          w[static_cast<size_t>(k * n + i)] = std::fabs(g(rng)) + 0.01f;
        }
      const bool weighted = trial % 4 < 2;
      std::vector<int8_t> L(total), Ls(total);
      float scale[16], iscale[16];
      bool zero[16];
      ggml::make_qx_quants_lanes(lanes, n, nmax, x.data(), L.data(), weighted ? w.data() : nullptr, scale, iscale, zero);
      for (int k = 0; k < lanes; ++k) {
        const size_t o = static_cast<size_t>(k * n);
        float siscale = 0;
        bool szero = false;
        const float sscale = ggml::make_qx_quants(n, nmax, x.data() + o, Ls.data() + o, weighted ? w.data() + o : nullptr,
                                                  &siscale, &szero);
        ASSERT_EQ(std::bit_cast<uint32_t>(scale[k]), std::bit_cast<uint32_t>(sscale)) << trial << " lane " << k;
        ASSERT_EQ(std::bit_cast<uint32_t>(iscale[k]), std::bit_cast<uint32_t>(siscale)) << trial << " lane " << k;
        ASSERT_EQ(zero[k], szero);
        ++compared;
      }
      ASSERT_EQ(L, Ls) << trial;
    }
  }
  EXPECT_EQ(compared, 4 * 100 * (8 + 16));
}

TEST(KQuantSearch, Q3LanesAreBitIdenticalToTheScalarSearch) {
  // Ordinary, all-zero, tiny, one-signed and outlier sub-blocks side by side; the refinement passes stop in different
  // lanes at different passes.
  std::mt19937 rng(13);
  std::normal_distribution<float> g(0.0f, 1.0f);
  int compared = 0;
  for (int nmax : {4, 8}) {
    for (int trial = 0; trial < 300; ++trial) {
      const int lanes = trial % 2 ? 16 : 8, n = trial % 3 ? 16 : 32;
      const size_t total = static_cast<size_t>(lanes * n);
      std::vector<float> x(total);
      for (int k = 0; k < lanes; ++k)
        for (int i = 0; i < n; ++i) {
          const int kind = (trial + k) % 6;
          float v = g(rng);
          if (kind == 0) v = 0.0f;
          if (kind == 1) v = 1e-17f * v;
          if (kind == 2) v = std::fabs(v);
          if (kind == 3 && i % 7 == 0) v *= 30.0f;
          x[static_cast<size_t>(k * n + i)] = v;
        }
      std::vector<int8_t> L(total), Ls(total);
      float scale[16];
      ggml::make_q3_quants_lanes(lanes, n, nmax, x.data(), L.data(), scale);
      for (int k = 0; k < lanes; ++k) {
        const size_t o = static_cast<size_t>(k * n);
        const float sscale = ggml::make_q3_quants(n, nmax, x.data() + o, Ls.data() + o);
        ASSERT_EQ(std::bit_cast<uint32_t>(scale[k]), std::bit_cast<uint32_t>(sscale)) << trial << " lane " << k;
        ++compared;
      }
      ASSERT_EQ(L, Ls) << trial;
    }
  }
  EXPECT_EQ(compared, 2 * 150 * (8 + 16));
}

}  // namespace
}  // namespace qz
