// Hugging Face checkpoints whose linears are already quantized and packed (config.json "quantization_config"):
// GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ's GEMM kernel layout). Each packed linear `<base>` (e.g.
// model.layers.0.self_attn.q_proj) replaces `<base>.weight` [out, in] by:
//   GPTQ  qweight int32 [in * b / 32, out]: for each output column j, the words qweight[0.., j] form a little-endian
//         bit stream of b-bit codes, code of input i at bits b*i .. b*i + b - 1 (b = 3 straddles words);
//         qzeros int32 [groups, out * b / 32]: row g the same bit stream over output columns;
//         scales fp16 [groups, out]; g_idx int32 [in]: the group of each input (i / group_size unless desc_act).
//         checkpoint_format "gptq" (v1) stores each zero minus one, "gptq_v2" the zero itself; sym grids have zero
//         2^(b-1).
//   AWQ   qweight int32 [in, out / 8]: word w of row i holds output columns 8w .. 8w+7 as nibbles in the order
//         0 2 4 6 1 3 5 7 (nibble p, bits 4p .. 4p+3, is column 8w + order[p]); qzeros int32 [groups, out / 8] the
//         same; scales fp16 [groups, out]; group of input i = i / group_size; 4-bit only.
// Every value is w[j][i] = scale[g][j] * (q[i][j] - zero[g][j]), g = the group of input i.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qz/io/checkpoint.hpp"
#include "qz/io/ggml_types.hpp"

namespace qz {

enum class PackedKind { GptqV1, GptqV2, AwqGemm, Bnb4 };

struct PackedScheme {
  PackedKind kind = PackedKind::GptqV1;
  int bits = 4;
  int group_size = 128;  // -1: one group per row
  bool desc_act = false;
  bool sym = true;
  std::string file;  // where the scheme is stated (config.json or quantize_config.json)
  std::string name() const;  // "GPTQ 4-bit groups of 128, symmetric"
};

// The scheme of a checkpoint directory: config.json's quantization_config, else quantize_config.json; nullopt when
// neither says the model is quantized. quant_method gptq, awq and bitsandbytes (4-bit) are read; any other method is
// an InputError naming the file and the method (as are bits or group sizes the method does not have).
std::optional<PackedScheme> read_packed_scheme(const std::filesystem::path& dir, const std::optional<nlohmann::json>& config);

class PackedLinear {
 public:
  std::string base;  // the linear's name: base + ".weight" is the weight it stands for
  PackedScheme scheme;
  const Checkpoint::Entry* qweight = nullptr;
  const Checkpoint::Entry* qzeros = nullptr;
  const Checkpoint::Entry* scales = nullptr;
  const Checkpoint::Entry* g_idx = nullptr;  // GPTQ only (optional there)
  size_t in_features = 0, out_features = 0, groups = 0;

  size_t group_of(size_t i) const;
  // True when input i is in group i / group_size for every i (no act-order permutation).
  bool ordered_groups() const;
  int32_t zero(size_t g, size_t j) const;  // the actual zero point (GPTQ v1's offset of one applied)
  float scale(size_t g, size_t j) const;
  uint16_t scale_bits(size_t g, size_t j) const;  // the fp16 bits as stored
  // The in_features codes of output row j.
  void codes_of_row(size_t j, int32_t* q) const;
  void dequantize_row(size_t j, float* out) const;

 private:
  friend std::vector<PackedLinear> find_packed_linears(const Checkpoint&, const PackedScheme&);
  std::vector<int32_t> group_index_;  // g_idx as read (checked), empty when absent
};

// A bitsandbytes 4-bit linear, as transformers serializes a Params4bit (and --output-format bnb writes it,
// pipeline/bnb_export.hpp): `<base>.weight` uint8 codes of the flattened [out, in] tensor, two per byte, the first in
// the high nibble; blocks of `blocksize` consecutive values share an absmax: `.weight.absmax` float32, or with double
// quantization uint8 codes of `.weight.nested_quant_map` times `.weight.nested_absmax` (one per 256 blocks) plus the
// nested offset; value = quant_map[code] * absmax. `.weight.quant_state.bitsandbytes__nf4` (or __fp4) holds the JSON
// state (quant_type, blocksize, shape, nested_offset).
class Bnb4Linear {
 public:
  std::string base;
  std::string quant_type;  // nf4 or fp4
  size_t out_features = 0, in_features = 0, blocksize = 64;
  bool double_quant = false;
  float nested_offset = 0.0f;
  const Checkpoint::Entry* weight = nullptr;
  const Checkpoint::Entry* absmax = nullptr;
  const Checkpoint::Entry* quant_map = nullptr;
  const Checkpoint::Entry* nested_absmax = nullptr;
  const Checkpoint::Entry* nested_quant_map = nullptr;
  std::vector<const Checkpoint::Entry*> parts() const;
  void dequantize_row(size_t j, float* out) const;
};

// Every bitsandbytes 4-bit linear (found by its quant_state tensor), checked: InputError naming file and tensor.
std::vector<Bnb4Linear> find_bnb4_linears(const Checkpoint& ckpt, const PackedScheme& scheme);
// Whether `name` is a bitsandbytes side tensor (absmax, quant_map, nested_*, quant_state.*).
bool is_bnb4_side_part(const std::string& name);

// Every packed linear of the checkpoint, shapes checked against the scheme: InputError naming the file and tensor.
std::vector<PackedLinear> find_packed_linears(const Checkpoint& ckpt, const PackedScheme& scheme);
// Whether `name` is one of a packed linear's tensors (qweight, qzeros, scales, g_idx).
bool is_packed_part(const std::string& name);

// The llama.cpp type that holds the linear's grid exactly, so its codes carry over: 4-bit symmetric -> Q4_0,
// 4-bit with zero points -> Q4_1 (its min m = fp16(-scale * zero) is the one value that moves), 8-bit symmetric ->
// Q8_0; only for groups that are a multiple of 32 in input order. nullopt with the reason otherwise.
std::optional<GgmlType> packed_native_type(const PackedLinear& p, std::string* why_not);

}  // namespace qz
