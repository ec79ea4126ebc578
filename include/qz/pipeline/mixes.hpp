// llama-quantize's presets ("mixes", its ftypes): a base type plus per-tensor choices (output head and some
// attn_v / ffn_down / attn_output layers get more bits), and its row-length fallbacks. Source: llama.cpp
// src/llama-quant.cpp (llama_tensor_get_type, tensor_type_fallback); not reproduced: Falcon, MoE (8-expert),
// 70B-class, IQ, ternary (TQ) and MXFP4 presets. Q2_K_S needs an imatrix, as in llama-quantize.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qz/io/ggml_types.hpp"
#include "qz/model/tensor_roles.hpp"

namespace qz {

enum class MixId { F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M,
                   Q5_K_S, Q5_K_M, Q6_K };

struct Mix {
  MixId id;
  std::string_view name;  // llama-quantize's spelling
  uint32_t file_type;     // general.file_type (LLAMA_FTYPE_*)
  GgmlType base;          // the type of every tensor the mix does not single out
};

const std::vector<Mix>& mixes();
// By name, case-insensitive; "Q3_K", "Q4_K", "Q5_K" mean their _M mixes, as in llama-quantize.
const Mix* find_mix(std::string_view name);

struct MixContext {
  int n_attn_v = 0;    // number of attn_v tensors (layers)
  int n_ffn_down = 0;  // number of ffn_down tensors
  int n_gqa = 1;       // attention heads per KV head
  bool has_imatrix = false;
  bool has_output = true;  // false when the output head is tied to the token embedding
};

struct MixChoice {
  GgmlType type;
  std::string reason;
};

// The type llama-quantize picks for a quantizable (2-D weight) tensor, before the row-length fallback.
MixChoice mix_type(const Mix& mix, const TensorRoleInfo& role, size_t row_length, const MixContext& ctx);

// The one output-head rule (the output head, or the tied embedding that serves as it, keeps more bits than the
// other weights): Q6_K for a base of at most 6.5625 bits per weight, Q8_0 up to 8.5, else the base (nullopt).
// `what` names the tensor in the reason. Rows Q6_K cannot store fall back as any tensor's do.
std::optional<MixChoice> output_head_choice(double base_bits_per_weight, const std::string& what);

// llama.cpp's row-length fallback: the type used when `row_length` is not a multiple of t's block
// (K-quants to a 32-block type, then F16). nullopt when t fits.
std::optional<GgmlType> row_length_fallback(GgmlType t, size_t row_length);

// use_more_bits(i, n): the layers llama-quantize gives more bits in its _M mixes.
bool use_more_bits(int i, int n);

}  // namespace qz
