// Element types of input tensors (safetensors dtypes) and their conversion to float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qz {

enum class DType { F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL };

// Size in bytes of one element.
size_t dtype_size(DType t);
// The safetensors spelling: "F32", "BF16", ...
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; nullopt if unknown.
std::optional<DType> parse_dtype(std::string_view s);
// True for the types we can convert to float for quantization (F32, F16, BF16, F64, I8, U8).
bool dtype_is_numeric_input(DType t);

// Converts n elements of type t starting at src (any alignment) to float. Integer types are converted by value.
void convert_to_f32(const void* src, DType t, float* dst, size_t n);

}  // namespace qz
