#include "qz/formats/format_table.hpp"

#include <algorithm>
#include <cctype>
#include <string>

#include "qz/formats/float_formats.hpp"
#include "qz/formats/kquants.hpp"
#include "qz/formats/legacy_quants.hpp"

namespace qz {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

FormatEntry entry(std::string_view name, std::optional<GgmlType> ggml, std::string_view summary, FormatPtr f) {
  return FormatEntry{name, ggml, f->block_size(), f->block_bytes(), summary, std::move(f)};
}

}  // namespace

const std::vector<FormatEntry>& format_table() {
  static const std::vector<FormatEntry> table = {
      entry("F32", GgmlType::F32, "32-bit float, lossless", make_f32_format()),
      entry("F16", GgmlType::F16, "IEEE half precision", make_f16_format()),
      entry("BF16", GgmlType::BF16, "bfloat16", make_bf16_format()),
      entry("Q4_0", GgmlType::Q4_0, "llama.cpp: blocks of 32, fp16 scale, 4-bit codes", make_q4_0_format()),
      entry("Q4_1", GgmlType::Q4_1, "llama.cpp: blocks of 32, fp16 scale and min, 4-bit codes", make_q4_1_format()),
      entry("Q5_0", GgmlType::Q5_0, "llama.cpp: blocks of 32, fp16 scale, 5-bit codes", make_q5_0_format()),
      entry("Q5_1", GgmlType::Q5_1, "llama.cpp: blocks of 32, fp16 scale and min, 5-bit codes", make_q5_1_format()),
      entry("Q8_0", GgmlType::Q8_0, "llama.cpp: blocks of 32, fp16 scale, int8 codes", make_q8_0_format()),
      entry("Q2_K", GgmlType::Q2_K, "llama.cpp K-quant: 256-blocks, 4-bit sub-block scales and mins", make_q2_k_format()),
      entry("Q3_K", GgmlType::Q3_K, "llama.cpp K-quant: 256-blocks, 6-bit signed sub-block scales", make_q3_k_format()),
      entry("Q4_K", GgmlType::Q4_K, "llama.cpp K-quant: 256-blocks, 6-bit scales and mins, 4-bit codes", make_q4_k_format()),
      entry("Q5_K", GgmlType::Q5_K, "llama.cpp K-quant: 256-blocks, 6-bit scales and mins, 5-bit codes", make_q5_k_format()),
      entry("Q6_K", GgmlType::Q6_K, "llama.cpp K-quant: 256-blocks, int8 sub-block scales, 6-bit codes", make_q6_k_format()),
  };
  return table;
}

FormatPtr find_format(std::string_view name, size_t row_length) {
  for (const auto& e : format_table())
    if (iequals(e.name, name)) return e.format;
  if (const auto spec = parse_int_format_name(name)) {
    if (spec->granularity != Granularity::Group && row_length == 0) return nullptr;
    return make_int_format(*spec, row_length);
  }
  return nullptr;
}

FormatPtr format_for_ggml_type(GgmlType type) {
  for (const auto& e : format_table())
    if (e.ggml == type) return e.format;
  return nullptr;
}

FormatPtr native_equivalent(const IntGridSpec& spec) {
  if (spec.bits == 8 && spec.symmetric && spec.granularity == Granularity::Group && spec.group == 32)
    return format_for_ggml_type(GgmlType::Q8_0);
  return nullptr;
}

}  // namespace qz
