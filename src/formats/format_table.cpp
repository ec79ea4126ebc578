#include "qz/formats/format_table.hpp"

#include <string>

#include "qz/core/strings.hpp"
#include "qz/formats/float_formats.hpp"
#include "qz/formats/int_grid.hpp"
#include "qz/formats/kquants.hpp"
#include "qz/formats/legacy_quants.hpp"
#include "qz/formats/nf4.hpp"

namespace qz {

namespace {

FormatEntry fixed(std::string_view name, GgmlType ggml, std::string_view summary, FormatPtr f) {
  const double bpw = f->bits_per_weight();
  return FormatEntry{name, ggml, summary, std::move(f), nullptr, bpw};
}

FormatPtr resolve_int_grid(std::string_view name, size_t row_length) {
  const auto spec = parse_int_format_name(name);
  if (!spec || (spec->granularity != Granularity::Group && row_length == 0)) return nullptr;
  return make_int_format(*spec, row_length);
}

FormatPtr resolve_nf4(std::string_view name, size_t) {
  Nf4Options o;
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return parse_nf4_name(lower, &o) ? make_nf4_format(o) : nullptr;
}

}  // namespace

const std::vector<FormatEntry>& format_table() {
  static const std::vector<FormatEntry> table = {
      fixed("F32", GgmlType::F32, "32-bit float, lossless", make_f32_format()),
      fixed("F16", GgmlType::F16, "IEEE half precision", make_f16_format()),
      fixed("BF16", GgmlType::BF16, "bfloat16", make_bf16_format()),
      fixed("Q4_0", GgmlType::Q4_0, "llama.cpp: blocks of 32, fp16 scale, 4-bit codes", make_q4_0_format()),
      fixed("Q4_1", GgmlType::Q4_1, "llama.cpp: blocks of 32, fp16 scale and min, 4-bit codes", make_q4_1_format()),
      fixed("Q5_0", GgmlType::Q5_0, "llama.cpp: blocks of 32, fp16 scale, 5-bit codes", make_q5_0_format()),
      fixed("Q5_1", GgmlType::Q5_1, "llama.cpp: blocks of 32, fp16 scale and min, 5-bit codes", make_q5_1_format()),
      fixed("Q8_0", GgmlType::Q8_0, "llama.cpp: blocks of 32, fp16 scale, int8 codes", make_q8_0_format()),
      fixed("Q2_K", GgmlType::Q2_K, "llama.cpp K-quant: 256-blocks, 4-bit sub-block scales and mins", make_q2_k_format()),
      fixed("Q3_K", GgmlType::Q3_K, "llama.cpp K-quant: 256-blocks, 6-bit signed sub-block scales", make_q3_k_format()),
      fixed("Q4_K", GgmlType::Q4_K, "llama.cpp K-quant: 256-blocks, 6-bit scales and mins, 4-bit codes", make_q4_k_format()),
      fixed("Q5_K", GgmlType::Q5_K, "llama.cpp K-quant: 256-blocks, 6-bit scales and mins, 5-bit codes", make_q5_k_format()),
      fixed("Q6_K", GgmlType::Q6_K, "llama.cpp K-quant: 256-blocks, int8 sub-block scales, 6-bit codes", make_q6_k_format()),
      FormatEntry{"int<B>_<sym|asym>_<g<N>|row|tensor>", std::nullopt,
                  "integer grids of 2..8 bits, absmax (sym) or zero-point (asym), per group of N columns, row or "
                  "tensor (--method absmax/zeropoint spell them); stored as llama.cpp's Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 "
                  "when one holds the grid exactly, else in the project's layout",
                  nullptr, resolve_int_grid, 2.0},
      FormatEntry{"nf4_b<N>[_dq], fp4_b<N>[_dq]", std::nullopt,
                  "bitsandbytes NormalFloat-4 / FP4 in blocks of N (32..4096) over the flattened tensor, _dq: "
                  "double-quantized absmax (--method nf4/fp4 spell them)",
                  nullptr, resolve_nf4, 4.0 + 8.0 / 4096},
  };
  return table;
}

FormatPtr find_format(std::string_view name, size_t row_length) {
  for (const auto& e : format_table()) {
    if (e.family()) {
      if (FormatPtr f = e.resolve(name, row_length)) return f;
    } else if (iequals(e.name, name)) {
      return e.format;
    }
  }
  return nullptr;
}

FormatPtr format_for_ggml_type(GgmlType type) {
  for (const auto& e : format_table())
    if (!e.family() && e.ggml == type) return e.format;
  return nullptr;
}

std::string known_format_names() {
  std::string s;
  for (const auto& e : format_table()) {
    if (!s.empty()) s += ' ';
    s.append(e.name);
  }
  return s;
}

}  // namespace qz
