// The GGUF layout of what quantize writes, in one place for writing and reading back: the metadata (architecture,
// tokenizer, model card, how the file was made), the tensor infos of every stored part, and the project's custom
// layouts (docs/formats.md): a tensor whose format llama.cpp does not have is stored as I8 (or several parts, for
// NF4/FP4) with `quantize.tensor.<name>.format` (the format name) and `quantize.tensor.<name>.shape` (logical ne).
#pragma once

#include <string>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/io/gguf.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

std::string custom_format_key(const std::string& tensor);  // "quantize.tensor.<name>.format"
std::string custom_shape_key(const std::string& tensor);   // "quantize.tensor.<name>.shape"

// Declares the output file: metadata and tensor infos (every stored part), in plan order.
GgufWriter make_gguf_layout(const Plan& plan);

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
// A tensor's logical GGUF shape as both `inspect` and `--dry-run` show it: ne innermost first, "4096 x 11008".
std::string shape_string(const std::vector<uint64_t>& ne);

// Metadata keys that describe the layout of this file only (dropped when the tensors are rewritten as floats).
bool is_layout_key(const std::string& key);

}  // namespace qz
