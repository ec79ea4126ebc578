#include "qz/io/gguf.hpp"

#include <gtest/gtest.h>

#include "qz/core/error.hpp"
#include "raw_gguf.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

namespace fs = std::filesystem;

using test::expect_error;
using test::RawGguf;
using test::TempDir;

void expect_bad(const RawGguf& g, std::initializer_list<std::string> parts) {
  TempDir dir;
  const auto p = dir / "bad.gguf";
  test::write_bytes(p, g.b);
  std::vector<std::string> all(parts);
  all.push_back("bad.gguf");
  try {
    GgufFile f(p);
    ADD_FAILURE() << "accepted a malformed file";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const auto& s : all) EXPECT_NE(msg.find(s), std::string::npos) << msg << "\nmissing: " << s;
  }
}

TEST(GgufWriter, RoundTripsEveryValueTypeAndTensors) {
  TempDir dir;
  GgufWriter w;
  w.set("u8", uint8_t{200});
  w.set("i8", int8_t{-5});
  w.set("u16", uint16_t{65000});
  w.set("i16", int16_t{-30000});
  w.set("u32", uint32_t{4000000000u});
  w.set("i32", int32_t{-2000000000});
  w.set("f32", 1.5f);
  w.set("bool", true);
  w.set("str", "héllo");
  w.set("u64", uint64_t{1} << 60);
  w.set("i64", int64_t{-1} << 60);
  w.set("f64", 0.1);
  w.set("arr_str", GgufValue::strings({"a", "", "ccc"}));
  w.set("arr_f32", GgufValue::array(std::vector<float>{1.0f, -2.0f}));
  w.set("arr_i32", GgufValue::array(std::vector<int32_t>{}));
  w.add_tensor("t.f32", {3, 2}, GgmlType::F32);
  w.add_tensor("t.q8", {64}, GgmlType::Q8_0);
  w.add_tensor("t.i8", {5}, GgmlType::I8);
  {
    OutputFile out(dir / "x.gguf", false);
    w.write_header(out);
    w.write_tensor_data(out, test::to_bytes(std::vector<float>{1, 2, 3, 4, 5, 6}));
    w.write_tensor_data(out, std::vector<uint8_t>(68, 0xAB));
    w.write_tensor_data(out, std::vector<uint8_t>{1, 2, 3, 4, 5});
    w.finish();
    out.commit();
  }
  const auto bytes = test::read_bytes(dir / "x.gguf");
  EXPECT_EQ(bytes.size(), w.file_bytes());
  ASSERT_GE(bytes.size(), 24u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 4), "GGUF");
  EXPECT_EQ(bytes[4], 3);  // version 3, little-endian
  EXPECT_EQ(bytes[8], 3);  // three tensors
  EXPECT_EQ(bytes[16], 15);  // fifteen keys

  GgufFile f(dir / "x.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(*f.find("u8")->get_if<uint8_t>(), 200);
  EXPECT_EQ(*f.find("i8")->get_if<int8_t>(), -5);
  EXPECT_EQ(*f.find("u16")->get_if<uint16_t>(), 65000);
  EXPECT_EQ(*f.find("i16")->get_if<int16_t>(), -30000);
  EXPECT_EQ(*f.find("u32")->get_if<uint32_t>(), 4000000000u);
  EXPECT_EQ(*f.find("i32")->get_if<int32_t>(), -2000000000);
  EXPECT_EQ(*f.find("f32")->get_if<float>(), 1.5f);
  EXPECT_EQ(*f.find("bool")->get_if<bool>(), true);
  EXPECT_EQ(*f.find("str")->get_if<std::string>(), "héllo");
  EXPECT_EQ(*f.find("u64")->get_if<uint64_t>(), uint64_t{1} << 60);
  EXPECT_EQ(*f.find("i64")->get_if<int64_t>(), int64_t{-1} << 60);
  EXPECT_EQ(*f.find("f64")->get_if<double>(), 0.1);
  const auto* arr = f.find("arr_str")->get_if<GgufArray>();
  ASSERT_NE(arr, nullptr);
  EXPECT_EQ(arr->element_type, GgufType::STRING);
  ASSERT_EQ(arr->items.size(), 3u);
  EXPECT_EQ(*arr->items[2].get_if<std::string>(), "ccc");
  EXPECT_EQ(*f.find("arr_f32")->get_if<GgufArray>()->items[1].get_if<float>(), -2.0f);
  EXPECT_TRUE(f.find("arr_i32")->get_if<GgufArray>()->items.empty());
  EXPECT_EQ(f.find("arr_i32")->get_if<GgufArray>()->element_type, GgufType::I32);

  ASSERT_EQ(f.tensors().size(), 3u);
  const auto& t0 = f.tensors()[0];
  EXPECT_EQ(t0.ne, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(t0.offset, 0u);
  EXPECT_EQ(t0.nbytes, 24u);
  EXPECT_EQ(f.tensors()[1].offset, 32u);  // 24 padded to 32
  EXPECT_EQ(f.tensors()[1].nbytes, 68u);  // 2 blocks of 34
  EXPECT_EQ(f.tensors()[2].offset, 128u);  // 32 + 68 padded to 96 -> 32 + 96
  float v[6];
  std::memcpy(v, f.data(t0).data(), 24);
  EXPECT_EQ(v[5], 6.0f);
  EXPECT_EQ(f.data(f.tensors()[2])[4], 5);
  // Padding bytes are zeros.
  const auto start = f.data_offset();
  for (size_t i = start + 24; i < start + 32; ++i) EXPECT_EQ(bytes[i], 0) << i;
}

TEST(GgufWriter, CustomAlignmentIsWrittenAsU32) {
  TempDir dir;
  GgufWriter w(64);
  w.add_tensor("a", {3}, GgmlType::F32);
  w.add_tensor("b", {1}, GgmlType::F32);
  OutputFile out(dir / "a.gguf", false);
  w.write_header(out);
  w.write_tensor_data(out, test::to_bytes(std::vector<float>{1, 2, 3}));
  w.write_tensor_data(out, test::to_bytes(std::vector<float>{4}));
  out.commit();
  GgufFile f(dir / "a.gguf");
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.find("general.alignment")->type(), GgufType::U32);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.tensors()[1].offset, 64u);
}

TEST(GgufWriter, RejectsBadDeclarations) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), {1}, GgmlType::F32), UsageError);
  EXPECT_THROW(w.add_tensor("q", {33}, GgmlType::Q8_0), UsageError);
  EXPECT_THROW(w.add_tensor("d", {1, 1, 1, 1, 1}, GgmlType::F32), UsageError);
  w.add_tensor("ok", {1}, GgmlType::F32);
  EXPECT_THROW(w.add_tensor("ok", {1}, GgmlType::F32), UsageError);
  EXPECT_THROW(GgufWriter(48), UsageError);
}

TEST(OutputFileTest, NothingAtDestinationUntilCommitAndNothingLeftOnFailure) {
  TempDir dir;
  const auto dest = dir / "out.bin";
  {
    OutputFile out(dest, false);
    out.write("abc", 3);
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_EQ(dir.files().size(), 1u);  // the temporary file
  }  // destroyed without commit
  EXPECT_TRUE(dir.files().empty());
  {
    OutputFile out(dest, false);
    out.write("abc", 3);
    out.commit();
  }
  EXPECT_EQ(test::read_bytes(dest).size(), 3u);
  EXPECT_THROW(OutputFile(dest, false), UsageError);  // refuses to overwrite
  {
    OutputFile out(dest, true);
    out.write("z", 1);
  }  // failed replacement keeps the old file
  EXPECT_EQ(test::read_bytes(dest).size(), 3u);
  EXPECT_EQ(dir.files().size(), 1u);
}

// ---- malformed files ----

TEST(GgufMalformed, BadMagic) {
  RawGguf g;
  g.header(3, 0, 0);
  g.b[0] = 'X';
  expect_bad(g, {"bad magic"});
}

TEST(GgufMalformed, UnsupportedVersion) {
  RawGguf g;
  expect_bad(g.header(1, 0, 0), {"version 1"});
  expect_bad(g.header(4, 0, 0), {"version 4"});
}

TEST(GgufMalformed, TruncatedHeader) {
  RawGguf g;
  g.header(3, 0, 1).str("key").put<int32_t>(8).put<uint64_t>(100);
  expect_bad(g, {"truncated"});
}

TEST(GgufMalformed, ImpossibleCounts) {
  RawGguf g;
  expect_bad(g.header(3, 1'000'000, 0), {"tensor count 1000000"});
  expect_bad(g.header(3, 0, -1), {"metadata count -1"});
}

TEST(GgufMalformed, UnknownValueType) {
  RawGguf g;
  g.header(3, 0, 1).str("k").put<int32_t>(13).put<uint32_t>(0);
  expect_bad(g, {"'k'", "unknown value type 13"});
}

TEST(GgufMalformed, NestedArray) {
  RawGguf g;
  g.header(3, 0, 1).str("k").put<int32_t>(9).put<int32_t>(9).put<uint64_t>(0);
  expect_bad(g, {"'k'", "nested"});
}

TEST(GgufMalformed, ArrayLongerThanFile) {
  RawGguf g;
  g.header(3, 0, 1).str("k").put<int32_t>(9).put<int32_t>(6).put<uint64_t>(1u << 30);
  expect_bad(g, {"'k'", "runs past the end"});
}

TEST(GgufMalformed, StringLongerThanFile) {
  RawGguf g;
  g.header(3, 0, 1).str("k").put<int32_t>(8).put<uint64_t>(1000);
  expect_bad(g, {"truncated", "string"});
}

TEST(GgufMalformed, DuplicateKey) {
  RawGguf g;
  g.header(3, 0, 2).str("k").put<int32_t>(4).put<uint32_t>(1).str("k").put<int32_t>(4).put<uint32_t>(2);
  expect_bad(g, {"duplicate metadata key 'k'"});
}

TEST(GgufMalformed, AlignmentOfWrongTypeOrNotPowerOfTwo) {
  RawGguf g;
  g.header(3, 0, 1).str("general.alignment").put<int32_t>(10).put<uint64_t>(32);
  expect_bad(g, {"general.alignment", "must be u32"});
  g.header(3, 0, 1).str("general.alignment").put<int32_t>(4).put<uint32_t>(48);
  expect_bad(g, {"not a power of two"});
}

TEST(GgufMalformed, UnknownTensorType) {
  RawGguf g;
  g.header(3, 1, 0).tensor("w", {32}, 4, 0).pad().data(32);  // 4 = the removed Q4_2
  expect_bad(g, {"'w'", "unknown ggml type 4"});
}

TEST(GgufMalformed, TooManyDimensions) {
  RawGguf g;
  g.header(3, 1, 0).tensor("w", {1, 1, 1, 1, 1}, 0, 0).pad().data(32);
  expect_bad(g, {"'w'", "5 dimensions"});
}

TEST(GgufMalformed, RowNotMultipleOfBlock) {
  RawGguf g;
  g.header(3, 1, 0).tensor("w", {33}, 8, 0).pad().data(64);
  expect_bad(g, {"'w'", "not a multiple", "q8_0"});
}

TEST(GgufMalformed, MisalignedOffset) {
  RawGguf g;
  g.header(3, 2, 0).tensor("a", {1}, 0, 0).tensor("b", {1}, 0, 4).pad().data(64);
  expect_bad(g, {"'b'", "not aligned"});
}

TEST(GgufMalformed, DataOutOfOrder) {
  RawGguf g;
  g.header(3, 2, 0).tensor("a", {1}, 0, 32).tensor("b", {1}, 0, 0).pad().data(64);
  expect_bad(g, {"'a'", "expected"});
}

TEST(GgufMalformed, TensorDataPastEndOfFile) {
  RawGguf g;
  g.header(3, 1, 0).tensor("w", {64}, 0, 0).pad().data(100);
  expect_bad(g, {"'w'", "truncated"});
}

// A byte size that wraps 64 bits (issue 16, defect 7): [8, 2^59 + 1] F32 is 2^64 + 32 bytes, once "32 bytes".
TEST(GgufMalformed, ByteSizeThatOverflowsIsAnError) {
  RawGguf g;
  g.header(3, 1, 0).tensor("w", {8, (1ull << 59) + 1}, 0, 0).pad().data(64);
  expect_bad(g, {"'w'", "more bytes than 64 bits count"});
  RawGguf h;
  h.header(3, 1, 0).tensor("w", {8, 1ull << 40}, 0, 0).pad().data(64);
  expect_bad(h, {"'w'", "needs 35184372088832 bytes"});
}

TEST(GgufMalformed, DuplicateTensor) {
  RawGguf g;
  g.header(3, 2, 0).tensor("w", {1}, 0, 0).tensor("w", {1}, 0, 32).pad().data(64);
  expect_bad(g, {"duplicate tensor 'w'"});
}

TEST(GgufMalformed, BoolNotZeroOrOne) {
  RawGguf g;
  g.header(3, 0, 1).str("b").put<int32_t>(7).put<uint8_t>(2);
  expect_bad(g, {"'b'", "bool"});
}

TEST(Gguf, ReadsHandWrittenFile) {
  RawGguf g;
  g.header(3, 1, 1).str("general.name").put<int32_t>(8).str("hand");
  g.tensor("w", {2}, 0, 0).pad();
  g.put(0.5f).put(-4.0f).pad();
  TempDir dir;
  test::write_bytes(dir / "h.gguf", g.b);
  GgufFile f(dir / "h.gguf");
  EXPECT_EQ(*f.find("general.name")->get_if<std::string>(), "hand");
  float v[2];
  std::memcpy(v, f.data(*f.find_tensor("w")).data(), 8);
  EXPECT_EQ(v[1], -4.0f);
}

}  // namespace
}  // namespace qz
