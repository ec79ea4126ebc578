// Hugging Face safetensors: a strict, zero-copy reader over memory-mapped files, checkpoints made of one file,
// several files or an index with shards, and a streaming writer.
//
// File layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}}, then the data section; offsets are relative to the data section.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qz/core/dtype.hpp"
#include "qz/io/mapped_file.hpp"
#include "qz/io/output_file.hpp"

namespace qz {

inline constexpr uint64_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;  // 100 MB, as the reference reader

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // row-major, outermost first (PyTorch order)
  uint64_t begin = 0;           // byte offsets relative to the data section
  uint64_t end = 0;
  uint64_t numel() const;
};

// One validated safetensors file. Throws InputError naming the file (and tensor) on any defect.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return map_.path(); }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // in data order
  const SafetensorsTensor* find(std::string_view name) const;
  std::span<const uint8_t> data(const SafetensorsTensor& t) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile map_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: every tensor of one or more safetensors files, plus config.json when it is a directory.
class Checkpoint {
 public:
  struct Entry {
    const SafetensorsFile* file;
    const SafetensorsTensor* tensor;
    std::span<const uint8_t> bytes() const { return file->data(*tensor); }
  };

  // `path` is a .safetensors file, or a directory holding model.safetensors.index.json and its shards, or
  // .safetensors files (all taken, in name order).
  static Checkpoint open(const std::filesystem::path& path);
  // Several files given explicitly, in that order.
  static Checkpoint open_files(const std::vector<std::filesystem::path>& files);

  const std::vector<Entry>& tensors() const { return entries_; }
  const Entry* find(std::string_view name) const;
  // The directory's config.json, if any (InputError if present but not valid JSON).
  const std::optional<nlohmann::json>& config() const { return config_; }
  const std::filesystem::path& source() const { return source_; }
  size_t file_count() const { return files_.size(); }

 private:
  void add_file(const std::filesystem::path& p);
  void index_entries();
  std::filesystem::path source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
  std::optional<nlohmann::json> config_;
};

// Streaming writer: the header is written first from the declared tensors, then each tensor's bytes in order.
class SafetensorsWriter {
 public:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
  };
  SafetensorsWriter(OutputFile& out, std::vector<Decl> tensors, const std::map<std::string, std::string>& metadata = {});
  // Writes the data of the next tensor; its size must match the declaration.
  void write_next(std::span<const uint8_t> bytes);
  // Checks that every declared tensor was written.
  void finish() const;

 private:
  OutputFile& out_;
  std::vector<Decl> decls_;
  size_t next_ = 0;
};

// Convenience for tools and tests: writes a whole safetensors file (via a temporary file) from in-memory tensors.
struct SafetensorsBlob {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::filesystem::path& path, const std::vector<SafetensorsBlob>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, bool overwrite = true);

}  // namespace qz
