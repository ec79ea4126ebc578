// The GGUF storage of a tensor in any format of the table, read back: llama.cpp's types as they are, and the
// project's custom layouts (docs/formats.md): a tensor whose format llama.cpp does not have is stored as I8 (or
// several parts, for NF4/FP4: format.hpp's stored_parts) with `quantize.tensor.<name>.format` (the format name) and
// `quantize.tensor.<name>.shape` (its logical ne). pipeline/gguf_layout writes them; dequantization and the engine
// read them through this.
#pragma once

#include <string>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/io/gguf.hpp"

namespace qz {

std::string custom_format_key(const std::string& tensor);  // "quantize.tensor.<name>.format"
std::string custom_shape_key(const std::string& tensor);   // "quantize.tensor.<name>.shape"

// A stored tensor read back: its format, logical ne and the GGUF tensors of its parts (main part first).
struct StoredTensor {
  FormatPtr format;
  std::vector<uint64_t> logical_ne;
  std::vector<const GgufTensorInfo*> parts;
};
// Throws InputError naming the file and tensor when the type or custom layout is unknown, a part is missing or its
// metadata does not match the stored size.
StoredTensor read_stored_tensor(const GgufFile& file, const GgufTensorInfo& t);
// True for a side part of another stored tensor (NF4's absmax ...), decoded with it, not on its own.
bool is_side_part(const GgufFile& file, const GgufTensorInfo& t);
// Decodes one stored tensor (with its side parts) to floats (row-major, ne[0] fastest). InputError naming the file
// and tensor when its stored bytes do not match its format.
std::vector<float> decode_stored_tensor(const GgufFile& file, const GgufTensorInfo& t);
// Metadata keys that describe the layout of this file only (dropped when the tensors are rewritten as floats).
bool is_layout_key(const std::string& key);

}  // namespace qz
