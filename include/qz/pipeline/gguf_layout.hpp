// The GGUF layout of what quantize writes: the metadata (architecture, tokenizer, model card, how the file was
// made) and the tensor infos of every stored part, with the project's custom layout keys (formats/stored_tensor.hpp,
// which reads them back).
#pragma once

#include <string>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/formats/stored_tensor.hpp"
#include "qz/io/gguf.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

// Declares the output file: metadata and tensor infos (every stored part), in plan order.
GgufWriter make_gguf_layout(const Plan& plan);

// A tensor's logical GGUF shape as both `inspect` and `--dry-run` show it: ne innermost first, "4096 x 11008".
std::string shape_string(const std::vector<uint64_t>& ne);

}  // namespace qz
