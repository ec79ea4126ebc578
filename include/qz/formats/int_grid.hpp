// Integer grids of 2..8 bits: absmax (symmetric) and zero-point (asymmetric), per group of G consecutive input
// columns, per output row, or per tensor. llama.cpp has no such types, so they are stored in the project's own
// layout as a GGUF I8 tensor of whole blocks (docs/formats.md), which `quantize dequantize` decodes.
//
// One block holds the values of one group (or one row):
//   symmetric   [fp16 d][codes]            x = d * (u - 2^(b-1)),  u in [1, 2^b - 1]
//   asymmetric  [fp16 d][u8 zero][codes]   x = d * (u - zero),     u in [0, 2^b - 1]
// codes: G codes of b bits, packed LSB-first (code j in bits j*b .. j*b+b-1 of the code bytes, bytes in
// increasing order), ceil(G*b/8) bytes. For per-tensor grids every row's block repeats the tensor's d and zero.
//
// Rounding (round-to-nearest, ties to even, with the stored fp16 d):
//   symmetric:  d = max|x| / (2^(b-1) - 1);  q = clamp(round(x / d), -(2^(b-1)-1), 2^(b-1)-1);  u = q + 2^(b-1)
//   asymmetric: lo = min(min x, 0), hi = max(max x, 0) (the grid always holds 0, as the GPTQ reference does);
//               d = (hi - lo) / (2^b - 1);  zero = clamp(round(-lo / d), 0, 2^b - 1);
//               u = clamp(round(x / d) + zero, 0, 2^b - 1)
// x / d is computed as x * (1/d). Inside the grid's range the error is at most d/2.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "qz/formats/format.hpp"

namespace qz {

enum class Granularity { Group, Row, Tensor };

struct IntGridSpec {
  int bits = 4;            // 2..8
  bool symmetric = true;   // absmax (true) or zero-point (false)
  Granularity granularity = Granularity::Group;
  size_t group = 128;      // columns per group when granularity == Group
  bool operator==(const IntGridSpec&) const = default;
};

// "int4_sym_g128", "int8_asym_row", "int3_sym_tensor".
std::string int_format_name(const IntGridSpec& spec);
std::optional<IntGridSpec> parse_int_format_name(std::string_view name);
// Throws UsageError for bits outside 2..8 or a zero group.
void validate_int_spec(const IntGridSpec& spec);

// A format for rows of `row_length` values (used by Row and Tensor granularity; ignored for Group).
FormatPtr make_int_format(const IntGridSpec& spec, size_t row_length);

}  // namespace qz
