#include "qz/pipeline/mixes.hpp"

#include <algorithm>

#include "qz/core/strings.hpp"

namespace qz {

const std::vector<Mix>& mixes() {
  static const std::vector<Mix> table = {
      {MixId::F32, "F32", 0, GgmlType::F32},       {MixId::F16, "F16", 1, GgmlType::F16},
      {MixId::BF16, "BF16", 32, GgmlType::BF16},   {MixId::Q4_0, "Q4_0", 2, GgmlType::Q4_0},
      {MixId::Q4_1, "Q4_1", 3, GgmlType::Q4_1},    {MixId::Q5_0, "Q5_0", 8, GgmlType::Q5_0},
      {MixId::Q5_1, "Q5_1", 9, GgmlType::Q5_1},    {MixId::Q8_0, "Q8_0", 7, GgmlType::Q8_0},
      {MixId::Q2_K, "Q2_K", 10, GgmlType::Q2_K},   {MixId::Q2_K_S, "Q2_K_S", 21, GgmlType::Q2_K},
      {MixId::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3_K},
      {MixId::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K}, {MixId::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3_K},
      {MixId::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4_K}, {MixId::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K},
      {MixId::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5_K}, {MixId::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K},
      {MixId::Q6_K, "Q6_K", 18, GgmlType::Q6_K},
  };
  return table;
}

const Mix* find_mix(std::string_view name) {
  std::string_view target = name;
  if (iequals(name, "Q3_K")) target = "Q3_K_M";
  if (iequals(name, "Q4_K")) target = "Q4_K_M";
  if (iequals(name, "Q5_K")) target = "Q5_K_M";
  for (const auto& m : mixes())
    if (iequals(m.name, target)) return &m;
  return nullptr;
}

bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

MixChoice mix_type(const Mix& mix, const TensorRoleInfo& info, size_t row_length, const MixContext& ctx) {
  const GgmlType base = mix.base;
  const auto& tr = ggml_type_traits(base);
  if (tr.block_size == 1) return {base, std::string(mix.name) + " stores every weight as " + std::string(tr.name)};
  const MixId id = mix.id;
  const int i = info.layer;
  auto pick = [](GgmlType t, std::string why) { return MixChoice{t, std::move(why)}; };

  if (info.role == TensorRole::Output || (!ctx.has_output && info.role == TensorRole::TokenEmbedding)) {
    const std::string what = info.role == TensorRole::Output ? "output head" : "tied token embedding / output head";
    if (row_length % tr.block_size != 0) return pick(GgmlType::Q8_0, what + " with rows unfit for the base type: Q8_0");
    const double bpw = 8.0 * tr.type_size / tr.block_size;
    if (auto up = output_head_choice(bpw, what)) return *up;
    return pick(base, what);
  }
  const std::string base_reason = std::string(mix.name) + " base type";
  switch (info.role) {
    case TensorRole::AttnV:
    case TensorRole::AttnQkv: {
      const int n = ctx.n_attn_v;
      if (id == MixId::Q2_K) return pick(ctx.n_gqa >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K, "Q2_K: attn_v gets more bits");
      if (id == MixId::Q2_K_S && ctx.n_gqa >= 4) return pick(GgmlType::Q4_K, "Q2_K_S: attn_v under GQA (>= 4) gets Q4_K");
      if (id == MixId::Q3_K_M) return pick(i < 2 ? GgmlType::Q5_K : GgmlType::Q4_K, "Q3_K_M: attn_v gets more bits");
      if (id == MixId::Q3_K_L) return pick(GgmlType::Q5_K, "Q3_K_L: attn_v gets Q5_K");
      if ((id == MixId::Q4_K_M || id == MixId::Q5_K_M) && use_more_bits(i, n))
        return pick(GgmlType::Q6_K, std::string(mix.name) + ": attn_v of a use_more_bits layer gets Q6_K");
      if (id == MixId::Q4_K_S && i < 4) return pick(GgmlType::Q5_K, "Q4_K_S: attn_v of the first 4 layers gets Q5_K");
      return pick(base, base_reason);
    }
    case TensorRole::FfnDown: {
      const int n = ctx.n_ffn_down;
      if (id == MixId::Q2_K) return pick(GgmlType::Q3_K, "Q2_K: ffn_down gets Q3_K");
      if (id == MixId::Q2_K_S && i < n / 8) return pick(GgmlType::Q4_K, "Q2_K_S: ffn_down of the first n/8 layers gets Q4_K");
      if (id == MixId::Q3_K_M)
        return pick(i < n / 16 ? GgmlType::Q5_K : GgmlType::Q4_K, "Q3_K_M: ffn_down gets more bits");
      if (id == MixId::Q3_K_L) return pick(GgmlType::Q5_K, "Q3_K_L: ffn_down gets Q5_K");
      if ((id == MixId::Q4_K_M || id == MixId::Q5_K_M) && use_more_bits(i, n))
        return pick(GgmlType::Q6_K, std::string(mix.name) + ": ffn_down of a use_more_bits layer gets Q6_K");
      if (id == MixId::Q4_K_S && i < n / 8) return pick(GgmlType::Q5_K, "Q4_K_S: ffn_down of the first n/8 layers gets Q5_K");
      if ((id == MixId::Q4_0 || id == MixId::Q5_0) && ctx.has_imatrix && i < n / 8)
        return pick(id == MixId::Q4_0 ? GgmlType::Q4_1 : GgmlType::Q5_1,
                    std::string(mix.name) + " with imatrix: ffn_down of the first n/8 layers gets a min");
      return pick(base, base_reason);
    }
    case TensorRole::AttnOutput:
      if (id == MixId::Q2_K) return pick(GgmlType::Q3_K, "Q2_K: attn_output gets Q3_K");
      if (id == MixId::Q3_K_M) return pick(GgmlType::Q4_K, "Q3_K_M: attn_output gets Q4_K");
      if (id == MixId::Q3_K_L) return pick(GgmlType::Q5_K, "Q3_K_L: attn_output gets Q5_K");
      return pick(base, base_reason);
    default:
      return pick(base, base_reason);
  }
}

std::optional<MixChoice> output_head_choice(double base_bits_per_weight, const std::string& what) {
  if (base_bits_per_weight >= 8.5) return std::nullopt;  // Q8_0 and the float types stay
  if (base_bits_per_weight <= 6.5625) return MixChoice{GgmlType::Q6_K, what + ": Q6_K, as llama-quantize does"};
  return MixChoice{GgmlType::Q8_0, what + ": keeps more bits (Q8_0), as llama-quantize does"};
}

std::optional<GgmlType> row_length_fallback(GgmlType t, size_t row_length) {
  const auto& tr = ggml_type_traits(t);
  if (row_length % tr.block_size == 0) return std::nullopt;
  GgmlType f = GgmlType::F16;
  switch (t) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K: f = GgmlType::Q4_0; break;
    case GgmlType::Q4_K: f = GgmlType::Q5_0; break;
    case GgmlType::Q5_K: f = GgmlType::Q5_1; break;
    case GgmlType::Q6_K: f = GgmlType::Q8_0; break;
    default: f = GgmlType::F16; break;  // llama-quantize aborts for 32-block types; F16 keeps the tensor usable
  }
  if (row_length % ggml_type_traits(f).block_size != 0) f = GgmlType::F16;
  return f;
}

}  // namespace qz
