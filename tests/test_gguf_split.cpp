// Split GGUF (io/gguf_split.hpp): gguf-split's part rule, names and keys; a split set read back as one file, and
// its errors (a missing part, a part that is not the first, a wrong tensor count).
#include <gtest/gtest.h>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/gguf_split.hpp"
#include "gguf_rewrite.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

// A layout of F32 tensors of the given element counts (one row each), with one metadata key.
GgufWriter layout(const std::vector<uint64_t>& sizes) {
  GgufWriter w;
  w.set("general.architecture", std::string("llama"));
  for (size_t i = 0; i < sizes.size(); ++i) w.add_tensor("t" + std::to_string(i), {sizes[i]}, GgmlType::F32);
  return w;
}

std::vector<fs::path> write_split(const fs::path& out, const std::vector<uint64_t>& sizes, GgufSplitLimits limits) {
  GgufSplitWriter w(layout(sizes), out, limits, true);
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<float> v(sizes[i], static_cast<float>(i));
    w.write_tensor_data({reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4});
  }
  w.commit();
  return w.paths();
}

uint32_t u(const GgufFile& g, const char* key) {
  const GgufValue* v = g.find(key);
  if (!v) return 999;
  if (auto* a = v->get_if<uint16_t>()) return *a;
  if (auto* b = v->get_if<int32_t>()) return static_cast<uint32_t>(*b);
  return 998;
}

TEST(GgufSplit, SizesAndNames) {
  EXPECT_EQ(parse_split_size("4G"), 4000000000ull);
  EXPECT_EQ(parse_split_size("500M"), 500000000ull);
  EXPECT_EQ(parse_split_size("64k"), 64000ull);
  EXPECT_EQ(parse_split_size("12345"), 12345ull);
  for (const char* bad : {"", "G", "0", "4T", "-1G", "1.5G", "x"}) EXPECT_THROW(parse_split_size(bad), UsageError) << bad;
  EXPECT_EQ(gguf_split_path("dir/model-q4.gguf", 0, 3), fs::path("dir/model-q4-00001-of-00003.gguf"));
  EXPECT_EQ(gguf_split_path("out", 11, 12), fs::path("out-00012-of-00012.gguf"));
  // The reader's side of the same names: taken apart, then put back together.
  const auto name = parse_gguf_split_name("dir/model-q4-00002-of-00003.gguf");
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(name->prefix, fs::path("dir/model-q4"));
  EXPECT_EQ(name->part, 2u);
  EXPECT_EQ(name->count, 3u);
  EXPECT_EQ(gguf_split_path(name->prefix, 0, name->count), fs::path("dir/model-q4-00001-of-00003.gguf"));
  for (const char* bad : {"model.gguf", "model-0001-of-00003.gguf", "model-00001-of-00003.bin", "model-00001-00003.gguf"})
    EXPECT_FALSE(parse_gguf_split_name(bad).has_value()) << bad;
}

// gguf-split's rule: a new part before a tensor that would take the part's padded tensor bytes past the limit, or
// after every N tensors; the metadata in the first part only; split.no / split.count (u16), split.tensors.count (i32).
TEST(GgufSplit, PartsFollowGgufSplitsRuleAndCarryItsKeys) {
  test::TempDir dir;
  // Tensors of 40, 24, 8 and 100 floats: 160, 96, 32 and 400 bytes (already multiples of 32). Limit 256 bytes:
  // [160, 96] (= 256, not past it), [32] (256 + 32 would be), [400] (alone, though over the limit).
  const auto parts = write_split(dir / "m.gguf", {40, 24, 8, 100}, {256, 0});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].filename(), "m-00001-of-00003.gguf");
  std::vector<size_t> per_part;
  for (size_t i = 0; i < parts.size(); ++i) {
    const GgufFile g(parts[i], GgufFile::kThisFileOnly);
    per_part.push_back(g.tensors().size());
    EXPECT_EQ(u(g, "split.no"), i);
    EXPECT_EQ(u(g, "split.count"), 3u);
    EXPECT_EQ(u(g, "split.tensors.count"), 4u);
    EXPECT_EQ(g.find("general.architecture") != nullptr, i == 0) << "metadata in the first part only";
  }
  EXPECT_EQ(per_part, (std::vector<size_t>{2, 1, 1}));
  EXPECT_EQ(write_split(dir / "n.gguf", {1, 1, 1, 1, 1}, {0, 2}).size(), 3u);  // 2 + 2 + 1 tensors
  EXPECT_EQ(write_split(dir / "one.gguf", {1, 1}, {0, 5}), (std::vector<fs::path>{dir / "one.gguf"}));  // fits: not split
}

TEST(GgufSplit, TheFirstPartReadsAsTheWholeFile) {
  test::TempDir dir;
  const auto parts = write_split(dir / "m.gguf", {40, 24, 8, 100}, {0, 1});
  ASSERT_EQ(parts.size(), 4u);
  const GgufFile g(parts[0]);
  ASSERT_EQ(g.tensors().size(), 4u);
  EXPECT_EQ(g.paths(), parts);
  for (size_t i = 0; i < 4; ++i) {
    const GgufTensorInfo* t = g.find_tensor("t" + std::to_string(i));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->part, i);
    const auto d = g.data(*t);
    float v = -1;
    std::memcpy(&v, d.data() + d.size() - 4, 4);
    EXPECT_EQ(v, static_cast<float>(i));
  }
  EXPECT_EQ(gguf_split_parts(parts[0]), parts);

  // A later part given alone, a missing part, a tensor count that disagrees: errors naming the file.
  try {
    GgufFile bad(parts[2]);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("give its first part"), std::string::npos) << e.what();
  }
  fs::rename(parts[3], dir / "away.gguf");
  try {
    GgufFile bad(parts[0]);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("part 4 of 4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  fs::rename(dir / "away.gguf", parts[3]);
  test::rewrite_gguf(parts[0], parts[0], [](const GgufKv& kv, GgufWriter& w) {
    w.set(kv.key, kv.key == "split.tensors.count" ? GgufValue(int32_t{5}) : kv.value);
  });
  EXPECT_THROW(GgufFile bad(parts[0]), InputError);
}

}  // namespace
}  // namespace qz
