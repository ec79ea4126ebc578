// GGUF v3: metadata values, a streaming writer and a validating reader.
//
// Layout (little-endian): "GGUF", u32 version = 3, i64 n_tensors, i64 n_kv, n_kv x (string key, i32 value type,
// value), n_tensors x (string name, u32 n_dims, i64 ne[n_dims], i32 ggml type, u64 offset), zero padding to
// `general.alignment` (u32, default 32), then the data blob. A string is u64 length + bytes (no NUL); an array is
// i32 element type + u64 count + elements. Tensor data lies in tensor-info order, each tensor padded with zeros to
// the alignment: tensor i's offset is the sum of the padded sizes before it (llama.cpp requires exactly this).
// ne[0] is the row length (contiguous dimension): a PyTorch [out, in] weight is written as ne = [in, out].
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qz/io/ggml_types.hpp"
#include "qz/io/mapped_file.hpp"
#include "qz/io/output_file.hpp"

namespace qz {

// GGUF metadata value types; the numbers are the on-disk ids.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12,
};
std::string_view gguf_type_name(GgufType t);

struct GgufValue;
struct GgufArray {
  GgufType element_type = GgufType::U8;
  std::vector<GgufValue> items;  // every item holds `element_type` (arrays of arrays are not allowed)
};

// One metadata value. The variant index equals the GGUF type id, so a value always knows its on-disk type.
struct GgufValue {
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               GgufArray, uint64_t, int64_t, double>;
  Storage v;

  GgufValue() = default;
  template <typename T>
    requires std::is_constructible_v<Storage, T> && (!std::is_same_v<std::decay_t<T>, const char*>)
  GgufValue(T x) : v(std::move(x)) {}  // NOLINT: implicit by design (a value of exactly one GGUF type)
  GgufValue(const char* s) : v(std::string(s)) {}  // NOLINT

  GgufType type() const { return static_cast<GgufType>(v.index()); }
  template <typename T>
  const T* get_if() const { return std::get_if<T>(&v); }

  // Typed array helpers.
  static GgufValue strings(std::vector<std::string> items);
  template <typename T>
  static GgufValue array(const std::vector<T>& items) {
    GgufArray a;
    a.element_type = static_cast<GgufType>(Storage(T{}).index());
    a.items.reserve(items.size());
    for (const auto& x : items) a.items.emplace_back(x);
    return GgufValue(std::move(a));
  }
  // Human-readable rendering (arrays abbreviated) for `inspect`.
  std::string to_string(size_t max_items = 8) const;
};

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ne[0] = row length
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data blob (of its part, for a split GGUF)
  uint64_t nbytes = 0;
  uint32_t part = 0;    // a split GGUF read as one: the part (from 0) holding the data
};

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxNameLength = 63;  // GGML_MAX_NAME - 1

// Bytes of a tensor of `type` with dims ne; throws std::invalid_argument if ne[0] is not a multiple of the block.
uint64_t ggml_tensor_nbytes(GgmlType type, std::span<const uint64_t> ne);

// Streams a GGUF file: declare metadata and every tensor, then write_header(), then each tensor's data in
// declaration order. Nothing but the current tensor is ever held in memory.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = kGgufDefaultAlignment);

  // Adds a key (insertion order is kept; keys are unique; general.alignment is managed by the writer).
  void set(std::string key, GgufValue value);
  // Declares a tensor; returns its index. Throws UsageError for a bad name, shape or duplicate.
  size_t add_tensor(std::string name, std::vector<uint64_t> ne, GgmlType type);

  const std::vector<GgufKv>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  uint64_t header_bytes() const;  // size of everything before the data blob, padding included
  uint64_t file_bytes() const;    // total file size

  void write_header(OutputFile& out);
  // Writes the data of the next tensor (exactly its nbytes) and its padding.
  void write_tensor_data(OutputFile& out, std::span<const uint8_t> bytes);
  // Checks every tensor was written.
  void finish() const;

 private:
  uint32_t alignment_;
  std::vector<GgufKv> kv_;
  std::vector<GgufTensorInfo> tensors_;
  uint64_t data_bytes_ = 0;
  size_t next_ = 0;
  bool header_written_ = false;
};

// A validated, memory-mapped GGUF file (v2 or v3). Throws InputError naming the file and what is wrong.
// The first part of a split GGUF (parts named as io/gguf_split_name.hpp says) is read as the whole model: the first part's metadata, every
// part's tensors (each part checked; split.tensors.count must match), unless kThisFileOnly is passed.
class GgufFile {
 public:
  static constexpr bool kThisFileOnly = false;
  explicit GgufFile(const std::filesystem::path& path, bool whole_split = true);

  const std::filesystem::path& path() const { return map_.path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<GgufKv>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufValue* find(std::string_view key) const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  std::span<const uint8_t> data(const GgufTensorInfo& t) const;
  // The files read: this one, then the other parts of a split GGUF.
  std::vector<std::filesystem::path> paths() const;

 private:
  void add_split_parts();
  MappedFile map_;
  std::vector<std::unique_ptr<GgufFile>> parts_;  // parts 2.. of a split GGUF
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKv> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace qz
