// Bit-exactness that needs no ../shared: the inputs of llama.cpp's golden vectors are regenerated here with the
// generator their manifest documents, and our first block of every row is compared with the bytes llama.cpp wrote
// (data/golden_subset.json, copied from ../shared/golden by tools/extract_golden_subset.py).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qz/core/random.hpp"
#include "qz/formats/format_table.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

constexpr size_t kRows = 4, kCols = 4096;

// The manifest's generator: xorshift64 from seed + d, x = (float)(0.02 * gauss), then the distribution's edits.
std::vector<float> golden_input(uint64_t seed, const std::string& dist) {
  const uint64_t d = dist == "gauss" ? 0 : dist == "outlier" ? 1 : 2;
  XorShift64 rng(seed + d);
  std::vector<float> x(kRows * kCols);
  for (auto& v : x) v = static_cast<float>(0.02 * rng.gauss());
  if (dist == "outlier") {
    for (size_t i = 0; i < x.size(); ++i)
      if (i % 211 == 7) x[i] *= 40;
  } else if (dist == "edge") {
    for (size_t i = 0; i < kCols; ++i) {
      x[i] = 0.0f;
      x[kCols + i] *= 1e-6f;
      x[2 * kCols + i] = 0.5f;
      x[3 * kCols + i] = (i % 2 ? 1e-3f : -1e-3f) * (i % 64 == 5 ? 1000.0f : 1.0f);
    }
  }
  return x;
}

std::vector<float> golden_importance(uint64_t seed) {
  XorShift64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  std::vector<float> w(kCols);
  for (auto& v : w) v = static_cast<float>(std::exp(rng.gauss()));
  return w;
}

TEST(GoldenInputs, GeneratorReproducesTheSharedInputs) {
  const fs::path dir = test::shared_dir() / "golden";
  if (!fs::exists(dir / "manifest.json")) GTEST_SKIP() << "../shared/golden is absent: generator not cross-checked";
  for (const char* dist : {"gauss", "outlier", "edge"}) {
    const auto bytes = test::read_bytes(dir / (std::string("input_") + dist + "_seed1234.f32"));
    const auto x = golden_input(1234, dist);
    ASSERT_EQ(bytes.size(), x.size() * 4);
    EXPECT_EQ(std::memcmp(bytes.data(), x.data(), bytes.size()), 0) << dist;
  }
  const auto imp = test::read_bytes(dir / "imatrix_seed1234.f32");
  const auto w = golden_importance(1234);
  ASSERT_EQ(imp.size(), w.size() * 4);
  EXPECT_EQ(std::memcmp(imp.data(), w.data(), imp.size()), 0);
}

TEST(GoldenInputs, FirstBlocksMatchLlamaCpp) {
  const auto subset = nlohmann::json::parse(std::ifstream(fs::path(QZ_SOURCE_DIR) / "data" / "golden_subset.json"));
  const uint64_t seed = subset["seed"];
  const auto imp = golden_importance(seed);
  size_t checked = 0;
  for (const auto& e : subset["entries"]) {
    const auto f = format_for_ggml_type(static_cast<GgmlType>(e["ggml_type_id"].get<uint32_t>()));
    if (!f) continue;  // a type the table does not have yet
    SCOPED_TRACE(e["type"].get<std::string>() + " " + e["distribution"].get<std::string>() +
                 (e["imatrix"].get<bool>() ? " imatrix" : ""));
    const auto x = golden_input(seed, e["distribution"]);
    std::vector<uint8_t> row(f->row_bytes(kCols));
    for (size_t r = 0; r < kRows; ++r) {
      f->quantize_row(x.data() + r * kCols, row.data(), kCols, e["imatrix"].get<bool>() ? imp.data() : nullptr);
      std::string hex;
      for (size_t i = 0; i < f->block_bytes(); ++i) hex += fmt::format("{:02x}", row[i]);
      ASSERT_EQ(hex, e["first_blocks"][r].get<std::string>()) << "row " << r;
    }
    ++checked;
  }
  EXPECT_GE(checked, 60u);  // the ten legacy and K types, plain and imatrix, three distributions
}

}  // namespace
}  // namespace qz
