// A checkpoint: every tensor of the files a model is read from, by name, with config.json when it is a Hugging Face
// directory. The files are safetensors (one file, several, or shards with their index) or a GGUF file (one, or the
// parts of a split GGUF), memory-mapped; nothing is read until a tensor's bytes are.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qz/io/gguf.hpp"
#include "qz/io/safetensors.hpp"

namespace qz {

class Checkpoint {
 public:
  struct Entry {
    const TensorFile* file;
    const SafetensorsTensor* tensor;
    std::span<const uint8_t> bytes() const { return file->data(*tensor); }
  };

  // `path` is a .safetensors file, a GGUF file (any part of a split GGUF: all parts are read), or a directory
  // holding model.safetensors.index.json and its shards, or .safetensors files (all taken, in name order).
  static Checkpoint open(const std::filesystem::path& path);
  // Several files given explicitly, in that order.
  static Checkpoint open_files(const std::vector<std::filesystem::path>& files);

  const std::vector<Entry>& tensors() const { return entries_; }
  const Entry* find(std::string_view name) const;
  // The directory's config.json, if any (InputError if present but not valid JSON).
  const std::optional<nlohmann::json>& config() const { return config_; }
  const std::filesystem::path& source() const { return source_; }
  size_t file_count() const { return files_.size(); }
  // For a GGUF input: its first file (the metadata of a split GGUF is the first part's); null for safetensors.
  const GgufFile* gguf() const { return gguf_; }
  // Every file read, in order.
  std::vector<std::filesystem::path> paths() const;

 private:
  void add_file(const std::filesystem::path& p);
  void index_entries();
  std::filesystem::path source_;
  std::vector<std::unique_ptr<TensorFile>> files_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
  std::optional<nlohmann::json> config_;
  const GgufFile* gguf_ = nullptr;
};

}  // namespace qz
