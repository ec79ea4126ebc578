#include "qz/io/ggml_types.hpp"

#include <cctype>
#include <stdexcept>

#include "qz/io/ggml_blocks.hpp"

namespace qz {

namespace {
constexpr GgmlTypeTraits kTraits[] = {
    {GgmlType::F32, "f32", 1, 4},          {GgmlType::F16, "f16", 1, 2},
    {GgmlType::Q4_0, "q4_0", kQK4_0, sizeof(BlockQ4_0)},      {GgmlType::Q4_1, "q4_1", kQK4_1, sizeof(BlockQ4_1)},
    {GgmlType::Q5_0, "q5_0", kQK5_0, sizeof(BlockQ5_0)},      {GgmlType::Q5_1, "q5_1", kQK5_1, sizeof(BlockQ5_1)},
    {GgmlType::Q8_0, "q8_0", kQK8_0, sizeof(BlockQ8_0)},      {GgmlType::Q8_1, "q8_1", 32, 36},
    {GgmlType::Q2_K, "q2_K", kQK_K, sizeof(BlockQ2_K)},     {GgmlType::Q3_K, "q3_K", kQK_K, sizeof(BlockQ3_K)},
    {GgmlType::Q4_K, "q4_K", kQK_K, sizeof(BlockQ4_K)},    {GgmlType::Q5_K, "q5_K", kQK_K, sizeof(BlockQ5_K)},
    {GgmlType::Q6_K, "q6_K", kQK_K, sizeof(BlockQ6_K)},    {GgmlType::Q8_K, "q8_K", 256, 292},
    {GgmlType::IQ2_XXS, "iq2_xxs", 256, 66}, {GgmlType::IQ2_XS, "iq2_xs", 256, 74},
    {GgmlType::IQ3_XXS, "iq3_xxs", 256, 98}, {GgmlType::IQ1_S, "iq1_s", 256, 50},
    {GgmlType::IQ4_NL, "iq4_nl", 32, 18},  {GgmlType::IQ3_S, "iq3_s", 256, 110},
    {GgmlType::IQ2_S, "iq2_s", 256, 82},   {GgmlType::IQ4_XS, "iq4_xs", 256, 136},
    {GgmlType::I8, "i8", 1, 1},            {GgmlType::I16, "i16", 1, 2},
    {GgmlType::I32, "i32", 1, 4},          {GgmlType::I64, "i64", 1, 8},
    {GgmlType::F64, "f64", 1, 8},          {GgmlType::IQ1_M, "iq1_m", 256, 56},
    {GgmlType::BF16, "bf16", 1, 2},        {GgmlType::TQ1_0, "tq1_0", 256, 54},
    {GgmlType::TQ2_0, "tq2_0", 256, 66},
};
}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id) {
  for (const auto& t : kTraits)
    if (static_cast<uint32_t>(t.type) == id) return t;
  return std::nullopt;
}

const GgmlTypeTraits& ggml_type_traits(GgmlType type) {
  for (const auto& t : kTraits)
    if (t.type == type) return t;
  throw std::logic_error("ggml_type_traits: unknown type");
}

std::string ggml_type_label(GgmlType t) {
  std::string s(ggml_type_traits(t).name);
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace qz
