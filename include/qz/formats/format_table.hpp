// The format table: one entry per storage format, the single place that lists what the toolkit can write.
// Parametric integer grids (int<b>_<sym|asym>_<g<G>|row|tensor>) are one family entry resolved by name.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/formats/int_grid.hpp"

namespace qz {

struct FormatEntry {
  std::string_view name;        // llama-quantize's spelling (matched case-insensitively)
  std::optional<GgmlType> ggml;  // the ggml type id, when llama.cpp has the format
  size_t block_size;
  size_t block_bytes;
  std::string_view summary;
  FormatPtr format;  // quantize_row / dequantize_row / grid interface
  double bits_per_weight() const { return 8.0 * static_cast<double>(block_bytes) / static_cast<double>(block_size); }
};

const std::vector<FormatEntry>& format_table();

// A format by name: a table entry (case-insensitive) or an integer-grid name; row_length is needed for the
// per-row and per-tensor integer grids. nullptr when the name is unknown.
FormatPtr find_format(std::string_view name, size_t row_length = 0);

// The table's format for a ggml tensor type, nullptr if the toolkit cannot decode that type.
FormatPtr format_for_ggml_type(GgmlType type);

// The llama.cpp type that stores exactly this integer grid (absmax, 8 bits, groups of 32, fp16 scale = Q8_0),
// nullptr when there is none.
FormatPtr native_equivalent(const IntGridSpec& spec);

}  // namespace qz
