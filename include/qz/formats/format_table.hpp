// The format table: one row per storage type the toolkit writes and reads, the single list that --help, the
// planner and dequantization all read. Fixed types (llama.cpp's) are one row each; parametric families (integer
// grids int<b>_<sym|asym>_<g<G>|row|tensor>, bitsandbytes nf4_b<N>[_dq] / fp4_b<N>[_dq]) are one row that turns a
// name into its format.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/formats/int_grid.hpp"

namespace qz {

struct FormatEntry {
  std::string_view name;         // a type's name (llama-quantize's spelling, matched case-insensitively), or a
                                 // family's name pattern
  std::optional<GgmlType> ggml;  // the ggml type id, when llama.cpp has the format
  std::string_view summary;
  FormatPtr format;              // fixed types
  // Families: the format `name` spells (row_length for per-row and per-tensor grids), nullptr if it spells none.
  FormatPtr (*resolve)(std::string_view name, size_t row_length) = nullptr;
  double bits_per_weight = 0.0;  // nominal; for a family, its lowest
  bool family() const { return resolve != nullptr; }
};

const std::vector<FormatEntry>& format_table();

// A format by name: a fixed type (case-insensitive) or a family member. row_length is needed for the per-row and
// per-tensor integer grids. nullptr when the name is unknown.
FormatPtr find_format(std::string_view name, size_t row_length = 0);

// The table's format for a ggml tensor type, nullptr if the toolkit cannot decode that type.
FormatPtr format_for_ggml_type(GgmlType type);

// Every name the table knows, for messages: "F32 F16 ... int<B>_<sym|asym>_<g<N>|row|tensor> ...".
std::string known_format_names();

}  // namespace qz
