// Split GGUF files, as llama.cpp's gguf-split writes them and llama.cpp loads them: parts named
// PREFIX-00001-of-00003.gguf, the whole metadata in the first part only, and in every part the keys split.no (u16,
// from 0), split.count (u16) and split.tensors.count (i32, the tensors of all parts). A new part starts before a
// tensor that would take the current part's tensor data past --split-max-size (tensors padded to the alignment
// counted, metadata not), or after every --split-max-tensors tensors; a part always holds at least one tensor.
// GgufFile reads the first part of a set as the whole model (io/gguf.hpp); part names: io/gguf_split_name.hpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qz/io/gguf.hpp"
#include "qz/io/gguf_split_name.hpp"
#include "qz/io/output_file.hpp"

namespace qz {

struct GgufSplitLimits {
  uint64_t max_bytes = 0;   // 0: no size limit
  size_t max_tensors = 0;   // 0: no tensor-count limit
  bool any() const { return max_bytes != 0 || max_tensors != 0; }
};

// "4G", "500M", "64K" (powers of 1000, as gguf-split counts them) or a plain number of bytes. UsageError otherwise.
uint64_t parse_split_size(const std::string& text);

// The files of a split GGUF in order, given its first part (a file that is not split is returned alone).
// Throws InputError naming the missing or inconsistent part, or the part given when it is not the first.
std::vector<std::filesystem::path> gguf_split_parts(const std::filesystem::path& path);

// Writes a GGUF layout (metadata and tensor declarations) as one file or, with limits, as the parts of a split set;
// tensor data is streamed in declaration order as with GgufWriter. Every part is a temporary file until commit().
// A part that would replace one of `inputs` is refused (UsageError), whatever `overwrite` says.
class GgufSplitWriter {
 public:
  GgufSplitWriter(const GgufWriter& layout, const std::filesystem::path& output, const GgufSplitLimits& limits,
                  bool overwrite, const std::vector<std::filesystem::path>& inputs = {});
  void write_tensor_data(std::span<const uint8_t> bytes);
  void commit();  // checks that every tensor was written, then renames every part into place
  const std::vector<std::filesystem::path>& paths() const { return paths_; }
  uint64_t file_bytes() const;  // all parts

 private:
  std::vector<GgufWriter> parts_;
  std::vector<std::unique_ptr<OutputFile>> files_;
  std::vector<std::filesystem::path> paths_;
  std::vector<size_t> part_of_;  // per tensor
  size_t next_ = 0;
};

}  // namespace qz
