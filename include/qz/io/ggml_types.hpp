// ggml tensor type ids and their block geometry, as the GGUF format defines them (ggml.h `enum ggml_type`); the
// geometry of the types the toolkit writes comes from their block structs (ggml_blocks.hpp), the rest (types it
// only recognizes) is listed here.
// This is file-format knowledge used to validate GGUF tensor infos; the format table (formats/) says how to
// produce and decode the types this project writes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qz {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35,
};

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // ggml's lower-case name: "q4_0", "f16", ...
  uint32_t block_size;    // elements per block along ne[0]
  uint32_t type_size;     // bytes per block
};

// nullopt for ids that are not (or no longer) ggml types.
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id);
const GgmlTypeTraits& ggml_type_traits(GgmlType t);
// The name as llama.cpp's tools print types: "Q4_0", "Q4_K", "F16", "I8".
std::string ggml_type_label(GgmlType t);

}  // namespace qz
