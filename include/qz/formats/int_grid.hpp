// Integer grids of 2..8 bits: absmax (symmetric) and zero-point (asymmetric), per group of G consecutive input
// columns, per output row, or per tensor.
//
// Storage. Where one of llama.cpp's legacy types holds the grid exactly (grids of L = G, or the row length for
// per-row and per-tensor grids, with L a multiple of 32), the tensor is that type, which llama.cpp loads and runs:
//   symmetric  4-bit -> Q4_0 (q = u),  5-bit -> Q5_0 (q = u),  8-bit -> Q8_0 (q = u - 128)
//   asymmetric 4-bit -> Q4_1,          5-bit -> Q5_1           (q = u, m = fp16(-zero * d))
// Each of the grid's L/32 blocks of 32 repeats its d (and m). The asymmetric grid's values are then d * u + m: the
// fp16 rounding of m moves them by at most |m| * 2^-11 from d * (u - zero), and rounding and dequantize_value use
// the stored m, so methods with error feedback see exactly what llama.cpp reads.
// Otherwise (3, 6, 7-bit, asymmetric 8-bit, 2-bit, lengths not a multiple of 32) the project's own layout, a GGUF
// I8 tensor of whole blocks (docs/formats.md) that `quantize dequantize` decodes. One block holds one group (row):
//   symmetric   [fp16 d][codes]            x = d * (u - 2^(b-1)),  u in [1, 2^b - 1]
//   asymmetric  [fp16 d][u8 zero][codes]   x = d * (u - zero),     u in [0, 2^b - 1]
// codes: G codes of b bits, packed LSB-first (code j in bits j*b .. j*b+b-1 of the code bytes, bytes in
// increasing order), ceil(G*b/8) bytes. For per-tensor grids every row's block repeats the tensor's d and zero.
//
// Rounding (round-to-nearest, ties to even, with the stored fp16 d):
//   symmetric:  d = max|x| / (2^(b-1) - 1);  q = clamp(round(x / d), -(2^(b-1)-1), 2^(b-1)-1);  u = q + 2^(b-1)
//   asymmetric: lo = min(min x, 0), hi = max(max x, 0) (the grid always holds 0, as the GPTQ reference does);
//               d = (hi - lo) / (2^b - 1);  zero = clamp(round(-lo / d), 0, 2^b - 1);
//               u = clamp(round(x / d) + zero, 0, 2^b - 1)   (Q4_1 / Q5_1: u = clamp(round((x - m) / d), 0, 2^b - 1))
// x / d is computed as x * (1/d). Inside the grid's range the error is at most d/2 (plus the m rounding above).
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
// The llama.cpp type that holds the grid exactly (see above); row_length is used by per-row and per-tensor grids.
std::optional<GgmlType> native_storage(const IntGridSpec& spec, size_t row_length);
// Throws UsageError for bits outside 2..8 or a zero group.
void validate_int_spec(const IntGridSpec& spec);

// The grid of one stored row (either storage): for each block of the grid (a group, or the row) its fp16 d and its
// zero point (2^(b-1) for symmetric grids; for Q4_1 / Q5_1 storage round(-m / d)), and every value's code u, so
// that x = d * (u - zero) (what a Q4_1 / Q5_1 block holds up to the rounding of its min). `d` and `zero` hold
// row_length / block values, `codes` row_length.
void read_int_grid_row(const IntGridSpec& spec, size_t row_length, const uint8_t* row, int32_t* codes, uint16_t* d,
                       int32_t* zero);

// A format for rows of `row_length` values (used by Row and Tensor granularity; ignored for Group).
FormatPtr make_int_format(const IntGridSpec& spec, size_t row_length);

}  // namespace qz
