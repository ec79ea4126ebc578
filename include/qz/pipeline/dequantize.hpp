// Decoding a GGUF file back to float: llama.cpp types in the format table and the project's custom layouts.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "qz/core/dtype.hpp"
#include "qz/formats/format.hpp"
#include "qz/io/gguf.hpp"

namespace qz {

// Decodes one stored tensor (with its side parts, gguf_layout.hpp) to floats (row-major, ne[0] fastest). Throws
// InputError naming the file and tensor when its stored bytes do not match its format.
std::vector<float> dequantize_tensor(const GgufFile& file, const GgufTensorInfo& t);

// Writes every tensor of `input` as a safetensors file of `dtype` (F32, F16 or BF16), names kept, shapes in
// PyTorch order (outermost first). Returns the number of tensors written.
size_t dequantize_gguf(const std::filesystem::path& input, const std::filesystem::path& output, DType dtype,
                       bool overwrite);

// Writes `input` as a GGUF file whose tensors are all F32 (decoded), with the same metadata (less the custom-layout
// keys, general.file_type = 0): a float reference of exactly the quantized weights, loadable by llama.cpp.
size_t dequantize_gguf_to_gguf(const std::filesystem::path& input, const std::filesystem::path& output, bool overwrite);

// `quantize inspect`: metadata and a tensor table (name, logical shape as --dry-run shows it, type, bytes,
// offset).
std::string describe_gguf(const GgufFile& file);

}  // namespace qz
