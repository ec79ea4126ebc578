#include "qz/io/checkpoint.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

using test::expect_error;
using test::TempDir;

// A raw safetensors file: 8-byte little-endian header length, the header text, `data` bytes of data.
std::vector<uint8_t> raw(const std::string& header, size_t data, uint64_t declared_len = UINT64_MAX) {
  const uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::vector<uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  b.resize(8 + header.size() + data, 0x11);
  std::copy(header.begin(), header.end(), b.begin() + 8);
  return b;
}

void expect_bad(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  TempDir dir;
  const auto p = dir / "bad.safetensors";
  test::write_bytes(p, bytes);
  std::vector<std::string> all(parts);
  all.push_back("bad.safetensors");
  try {
    SafetensorsFile f(p);
    ADD_FAILURE() << "accepted a malformed file";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const auto& s : all) EXPECT_NE(msg.find(s), std::string::npos) << msg << "\nmissing: " << s;
  }
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  std::vector<SafetensorsBlob> blobs;
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.0f, 0.125f, -7.0f};
  blobs.push_back({"a.f32", DType::F32, {2, 3}, test::to_bytes(f32)});
  std::vector<uint16_t> f16, bf16;
  for (float x : f32) {
    f16.push_back(fp32_to_fp16(x));
    bf16.push_back(fp32_to_bf16(x));
  }
  blobs.push_back({"b.f16", DType::F16, {3, 2}, test::to_bytes(f16)});
  blobs.push_back({"c.bf16", DType::BF16, {6}, test::to_bytes(bf16)});
  blobs.push_back({"d.f64", DType::F64, {2}, test::to_bytes(std::vector<double>{0.25, -8.0})});
  blobs.push_back({"e.i8", DType::I8, {3}, test::to_bytes(std::vector<int8_t>{-128, 0, 127})});
  blobs.push_back({"f.u8", DType::U8, {2}, test::to_bytes(std::vector<uint8_t>{0, 255})});
  blobs.push_back({"g.empty", DType::F32, {0, 4}, {}});
  write_safetensors(dir / "m.safetensors", blobs, {{"format", "pt"}});

  SafetensorsFile f(dir / "m.safetensors");
  ASSERT_EQ(f.tensors().size(), blobs.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& b : blobs) {
    const SafetensorsTensor* t = f.find(b.name);
    ASSERT_NE(t, nullptr) << b.name;
    EXPECT_EQ(t->dtype, b.dtype);
    EXPECT_EQ(t->shape, b.shape);
    const auto d = f.data(*t);
    EXPECT_TRUE(std::equal(d.begin(), d.end(), b.bytes.begin(), b.bytes.end())) << b.name;
  }
  std::vector<float> out(6);
  convert_to_f32(f.data(*f.find("b.f16")).data(), DType::F16, out.data(), 6);
  EXPECT_EQ(out, f32);  // all six values are exact in fp16
  convert_to_f32(f.data(*f.find("c.bf16")).data(), DType::BF16, out.data(), 6);
  EXPECT_EQ(out[1], -2.25f);
  float wide[2];
  convert_to_f32(f.data(*f.find("d.f64")).data(), DType::F64, wide, 2);
  EXPECT_EQ(wide[1], -8.0f);
  convert_to_f32(f.data(*f.find("e.i8")).data(), DType::I8, out.data(), 3);
  EXPECT_EQ(out[0], -128.0f);
}

TEST(Safetensors, ReadsFilesWrittenByHand) {
  // Header written the way the reference implementation lays it out, independent of our writer.
  TempDir dir;
  const std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}})";
  auto bytes = raw(h, 0);
  const float v[2] = {3.5f, -1.0f};
  bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v) + 8);
  test::write_bytes(dir / "x.safetensors", bytes);
  SafetensorsFile f(dir / "x.safetensors");
  float out[2];
  convert_to_f32(f.data(*f.find("w")).data(), DType::F32, out, 2);
  EXPECT_EQ(out[0], 3.5f);
  EXPECT_EQ(out[1], -1.0f);
}

TEST(SafetensorsMalformed, TruncatedBeforeHeaderLength) { expect_bad({1, 2, 3}, {"truncated", "3 bytes"}); }

TEST(SafetensorsMalformed, HeaderLengthBeyondFile) {
  expect_bad(raw("{}", 0, 5000), {"truncated", "header length 5000"});
}

TEST(SafetensorsMalformed, HeaderOver100MB) {
  expect_bad(raw("{}", 0, 200'000'000), {"header length 200000000 exceeds"});
}

TEST(SafetensorsMalformed, InvalidJson) { expect_bad(raw(R"({"w": {"dtype": )", 0), {"invalid JSON header"}); }

TEST(SafetensorsMalformed, HeaderNotAnObject) { expect_bad(raw("[1,2]", 0), {"not an object"}); }

TEST(SafetensorsMalformed, UnknownDtype) {
  expect_bad(raw(R"({"w":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", 1), {"'w'", "unknown dtype 'F8_E9'"});
}

TEST(SafetensorsMalformed, ShapeDoesNotMatchOffsets) {
  expect_bad(raw(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
             {"'w'", "needs 24 bytes", "span 20"});
}

TEST(SafetensorsMalformed, OffsetsOutOfBounds) {
  expect_bad(raw(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8), {"'w'", "out of bounds"});
}

TEST(SafetensorsMalformed, OffsetsReversed) {
  expect_bad(raw(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", 8), {"'w'", "end before they begin"});
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 12),
             {"'a'", "'b'", "overlap"});
}

TEST(SafetensorsMalformed, GapBetweenTensors) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 12),
             {"not contiguous", "'b'"});
}

TEST(SafetensorsMalformed, TrailingBytes) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 10), {"6 trailing bytes"});
}

TEST(SafetensorsMalformed, DuplicateNames) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                 8),
             {"duplicate tensor name 'a'"});
}

TEST(SafetensorsMalformed, DimensionOverflow) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
             {"'a'", "overflows"});
}

TEST(SafetensorsMalformed, NegativeDimension) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), {"'a'", "negative"});
}

TEST(SafetensorsMalformed, MissingOffsets) {
  expect_bad(raw(R"({"a":{"dtype":"F32","shape":[1]}})", 4), {"'a'", "data_offsets"});
}

TEST(SafetensorsMalformed, NonStringMetadata) {
  expect_bad(raw(R"({"__metadata__":{"n":3}})", 0), {"__metadata__", "'n'"});
}

TEST(SafetensorsMalformed, EmptyFileIsTruncated) { expect_bad({}, {"truncated", "0 bytes"}); }

// ---- checkpoints ----

void write_index(const fs::path& dir, const std::string& weight_map) {
  std::ofstream(dir / "model.safetensors.index.json") << R"({"metadata":{},"weight_map":)" << weight_map << "}";
}

TEST(Checkpoint, OpensShardedDirectoryWithIndex) {
  TempDir dir;
  write_safetensors(dir / "s1.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_safetensors(dir / "s2.safetensors", {{"b", DType::F32, {1}, test::to_bytes(std::vector<float>{2})}});
  write_index(dir.path(), R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  std::ofstream(dir / "config.json") << R"({"hidden_size": 8})";
  const Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck.file_count(), 2u);
  ASSERT_EQ(ck.tensors().size(), 2u);
  ASSERT_NE(ck.find("b"), nullptr);
  EXPECT_EQ(ck.find("b")->file->path().filename(), "s2.safetensors");
  ASSERT_TRUE(ck.config().has_value());
  EXPECT_EQ((*ck.config())["hidden_size"], 8);
}

TEST(Checkpoint, OpensDirectoryWithoutIndexAndExplicitFiles) {
  TempDir dir;
  write_safetensors(dir / "x.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_safetensors(dir / "y.safetensors", {{"b", DType::F32, {1}, test::to_bytes(std::vector<float>{2})}});
  EXPECT_EQ(Checkpoint::open(dir.path()).tensors().size(), 2u);
  EXPECT_EQ(Checkpoint::open_files({dir / "y.safetensors", dir / "x.safetensors"}).tensors().front().tensor->name, "b");
}

TEST(CheckpointMalformed, IndexNamesMissingShard) {
  TempDir dir;
  write_safetensors(dir / "s1.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_index(dir.path(), R"({"a":"s1.safetensors","b":"s2.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); },
                           {"model.safetensors.index.json", "shard 's2.safetensors'", "'b'", "missing"});
}

TEST(CheckpointMalformed, IndexMapsTensorToWrongShard) {
  TempDir dir;
  write_safetensors(dir / "s1.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_safetensors(dir / "s2.safetensors", {{"b", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_index(dir.path(), R"({"a":"s2.safetensors","b":"s2.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); }, {"'a'", "does not contain it"});
}

TEST(CheckpointMalformed, IndexShardEscapesDirectory) {
  TempDir dir;
  write_index(dir.path(), R"({"a":"../elsewhere.safetensors"})");
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); }, {"plain file name", "'a'"});
}

TEST(CheckpointMalformed, SameTensorInTwoFiles) {
  TempDir dir;
  write_safetensors(dir / "x.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  write_safetensors(dir / "y.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{2})}});
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); }, {"'a' appears twice", "x.safetensors", "y.safetensors"});
}

TEST(CheckpointMalformed, MissingPathAndEmptyDirectory) {
  TempDir dir;
  expect_error<InputError>([&] { Checkpoint::open(dir / "nope"); }, {"nope", "no such file"});
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); }, {"no .safetensors file"});
}

TEST(CheckpointMalformed, BadConfigJson) {
  TempDir dir;
  write_safetensors(dir / "x.safetensors", {{"a", DType::F32, {1}, test::to_bytes(std::vector<float>{1})}});
  std::ofstream(dir / "config.json") << "{not json";
  expect_error<InputError>([&] { Checkpoint::open(dir.path()); }, {"config.json", "invalid JSON"});
}

}  // namespace
}  // namespace qz
