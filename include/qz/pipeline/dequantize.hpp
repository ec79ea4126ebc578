// Decoding a GGUF file back to float: llama.cpp types in the format table and the project's custom layouts.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "qz/core/dtype.hpp"
#include "qz/formats/format.hpp"
#include "qz/io/gguf.hpp"

namespace qz {

// The format of a stored GGUF tensor and its logical ne (ne[0] = row length). Throws InputError naming the file
// and tensor when the type or custom layout is unknown or its metadata does not match the stored size.
struct StoredFormat {
  FormatPtr format;
  std::vector<uint64_t> logical_ne;
};
StoredFormat stored_format(const GgufFile& file, const GgufTensorInfo& t);

// Decodes one tensor to floats (row-major, ne[0] fastest).
std::vector<float> dequantize_tensor(const GgufFile& file, const GgufTensorInfo& t);

// Writes every tensor of `input` as a safetensors file of `dtype` (F32, F16 or BF16), names kept, shapes in
// PyTorch order (outermost first). Returns the number of tensors written.
size_t dequantize_gguf(const std::filesystem::path& input, const std::filesystem::path& output, DType dtype,
                       bool overwrite);

// Writes `input` as a GGUF file whose tensors are all F32 (decoded), with the same metadata (less the custom-layout
// keys, general.file_type = 0): a float reference of exactly the quantized weights, loadable by llama.cpp.
size_t dequantize_gguf_to_gguf(const std::filesystem::path& input, const std::filesystem::path& output, bool overwrite);

// `quantize inspect`: metadata and a tensor table (name, shape, type, bytes, offset).
std::string describe_gguf(const GgufFile& file);

}  // namespace qz
