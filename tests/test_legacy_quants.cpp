#include "qz/formats/legacy_quants.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
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

TEST(Q8_0, AllZeroBlock) {
  const auto f = make_q8_0_format();
  float x[32] = {};
  BlockQ8_0 blk;
  f->quantize_row(x, reinterpret_cast<uint8_t*>(&blk), 32, nullptr);
  EXPECT_EQ(blk.d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(blk.qs[j], 0);
}

// Bit-exactness against vectors written by llama.cpp itself (../shared/golden, see its manifest.json).
TEST(Q8_0, MatchesLlamaCppGoldenVectors) {
  const fs::path dir = test::shared_dir() / "golden";
  if (!fs::exists(dir / "manifest.json")) GTEST_SKIP() << "../shared/golden is absent: llama.cpp golden vectors not checked";
  const auto manifest = nlohmann::json::parse(std::ifstream(dir / "manifest.json"));
  const size_t rows = manifest["rows"], cols = manifest["cols"];
  const auto f = format_for_ggml_type(GgmlType::Q8_0);
  int checked = 0;
  for (const auto& e : manifest["files"]) {
    if (e["type"] != "q8_0") continue;
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
  EXPECT_EQ(checked, 6);
}

}  // namespace
}  // namespace qz
