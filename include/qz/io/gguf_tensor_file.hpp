// A GGUF file as a file of tensors a checkpoint reads (io/checkpoint.hpp): each tensor described in safetensors terms
// (shape outermost first, the reverse of GGUF's ne; byte range relative to the data blob). F32, F16 and BF16 tensors
// get that dtype; the block types llama.cpp quantizes into (Q4_0 .. Q6_K, ...) keep their ggml type, for a reader
// that decodes blocks; other types (I8, I32, ...) map to the integer dtype of the same width where there is one.
#pragma once

#include <filesystem>
#include <vector>

#include "qz/io/gguf.hpp"
#include "qz/io/safetensors.hpp"

namespace qz {

class GgufTensorFile final : public TensorFile {
 public:
  explicit GgufTensorFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const override { return gguf_.path(); }
  const std::vector<SafetensorsTensor>& tensors() const override { return tensors_; }
  std::span<const uint8_t> data(const SafetensorsTensor& t) const override;
  const GgufFile& gguf() const { return gguf_; }

 private:
  GgufFile gguf_;
  std::vector<SafetensorsTensor> tensors_;  // in the order of gguf_.tensors()
};

// True when the file starts with GGUF's magic.
bool is_gguf_file(const std::filesystem::path& path);

}  // namespace qz
