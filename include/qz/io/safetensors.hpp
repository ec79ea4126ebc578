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
#include "qz/io/ggml_types.hpp"
#include "qz/io/mapped_file.hpp"
#include "qz/io/output_file.hpp"

namespace qz {

inline constexpr uint64_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;  // 100 MB, as the reference reader

// One tensor of a file, in safetensors terms (a GGUF tensor is described the same way: io/gguf_tensor_file.hpp).
struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // row-major, outermost first (PyTorch order)
  uint64_t begin = 0;           // byte offsets relative to the data section
  uint64_t end = 0;
  // A quantized GGUF tensor (Q4_0, Q4_K, ...): its rows are blocks of that type, decoded by the format table;
  // `dtype` is then U8. Never set for safetensors files.
  std::optional<GgmlType> ggml_type;
  uint64_t numel() const;
};

// A memory-mapped file of tensors a checkpoint reads from: a safetensors file, or a GGUF file.
class TensorFile {
 public:
  virtual ~TensorFile() = default;
  virtual const std::filesystem::path& path() const = 0;
  virtual const std::vector<SafetensorsTensor>& tensors() const = 0;  // in data order
  virtual std::span<const uint8_t> data(const SafetensorsTensor& t) const = 0;
};

// One validated safetensors file. Throws InputError naming the file (and tensor) on any defect.
class SafetensorsFile final : public TensorFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const override { return map_.path(); }
  const std::vector<SafetensorsTensor>& tensors() const override { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;
  std::span<const uint8_t> data(const SafetensorsTensor& t) const override;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile map_;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
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

// A checkpoint's tensors as Hugging Face shards them: one `model.safetensors`, or, past `max_bytes` of tensor data,
// `model-0000i-of-0000N.safetensors` of at most max_bytes each (a larger tensor alone) and
// `model.safetensors.index.json` (metadata.total_size, weight_map). Tensors are written in declaration order; every
// file is a temporary until commit(). max_bytes 0: one file.
class SafetensorsShardWriter {
 public:
  SafetensorsShardWriter(const std::filesystem::path& dir, const std::vector<SafetensorsWriter::Decl>& tensors,
                         uint64_t max_bytes, bool overwrite, const std::map<std::string, std::string>& metadata = {});
  void write_next(std::span<const uint8_t> bytes);
  void commit();
  uint64_t bytes() const;  // of every file written
  size_t shards() const { return writers_.size(); }

 private:
  std::filesystem::path dir_;
  bool overwrite_;
  std::vector<std::unique_ptr<OutputFile>> files_;
  std::vector<std::unique_ptr<SafetensorsWriter>> writers_;
  std::vector<size_t> shard_of_;
  std::map<std::string, std::string> weight_map_;
  uint64_t total_ = 0;
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
