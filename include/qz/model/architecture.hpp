// What the toolkit knows about model architectures, as data: which Hugging Face architectures map to which
// llama.cpp architecture, how their tensors are named in GGUF, which rows llama.cpp expects permuted, and how
// config.json becomes GGUF metadata. Adding an architecture: docs/architecture.md, "Adding a model family".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qz {

class GgufWriter;

struct ArchitectureInfo {
  std::string_view hf_name;    // config.json "architectures"[0]
  std::string_view gguf_name;  // general.architecture
  bool permute_qk;             // q_proj/k_proj rows from HF's rotate-half layout to llama.cpp's interleaved RoPE
  bool requires_qkv_bias;      // llama.cpp fails to load without attn_{q,k,v}.bias
  bool qk_norm;                // per-head RMSNorm of Q and K (attn_q_norm / attn_k_norm, [head_dim]) before RoPE;
                               // llama.cpp fails to load without them
};

const std::vector<ArchitectureInfo>& architectures();
// The llama.cpp architectures of the table, each once, comma-separated ("llama, qwen2, qwen3"), for error messages.
std::string gguf_architecture_names();
// Throws InputError listing the supported architectures when `hf_name` is not one of them.
const ArchitectureInfo& find_architecture(std::string_view hf_name, const std::string& config_path);

// Hyper-parameters from config.json.
struct ModelConfig {
  const ArchitectureInfo* arch = nullptr;
  std::string name;
  uint32_t context_length = 0, embedding_length = 0, block_count = 0, feed_forward_length = 0;
  uint32_t head_count = 0, head_count_kv = 0, head_dim = 0, vocab_size = 0;
  bool head_dim_in_config = false;  // config.json states head_dim (the converter then writes key/value_length)
  float rms_norm_eps = 1e-5f, rope_freq_base = 10000.0f;
  std::string rope_scaling_type;  // "linear", "yarn" or "llama3", empty if none
  float rope_scaling_factor = 1.0f;
  uint32_t rope_original_context = 0;
  float rope_yarn_beta_fast = 32.0f, rope_yarn_beta_slow = 1.0f;  // yarn's correction range (engine/rope.hpp)
  // llama3 scaling: per rotary frequency (head_dim / 2), the factor its angle is divided by, as llama.cpp's converter
  // writes them into `rope_freqs.weight` (1 for high frequencies, `factor` for low ones, smoothed between).
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
};

// llama3 rope scaling's frequency factors (Llama 3.1+): HF's rope_scaling {factor, low_freq_factor,
// high_freq_factor, original_max_position_embeddings} as llama.cpp's converter turns them into rope_freqs.weight.
std::vector<float> llama3_rope_factors(float base, uint32_t head_dim, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_context);

// Reads config.json (InputError naming the key when a required one is missing or of the wrong type).
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& config_path, const std::string& name);

// The GGUF name of a checkpoint tensor (HF name), or nullopt for a tensor llama.cpp does not load (e.g.
// rotary_emb.inv_freq). Throws InputError for a tensor the architecture does not know.
std::optional<std::string> gguf_tensor_name(const ModelConfig& m, const std::string& hf_name);

// For llama-style q_proj/k_proj (and their biases): the source row of every output row; empty for other tensors.
// llama.cpp's converter views the rows as [n_head, 2, head_dim/2] and swaps the last two axes.
std::vector<uint32_t> gguf_row_order(const ModelConfig& m, const std::string& hf_name, size_t rows);

// AWQ's scaling groups of decoder block `layer`, in Hugging Face names: the input scales s of `linears` are folded
// into `prev` (a norm weight divided by s, or a linear whose rows, and bias if any, are divided by s) and multiplied
// into the linears' columns. LLaMA family: attention norm -> q, k, v; v -> o (only valid when v's rows match o's
// columns, i.e. without grouped-query attention; the caller checks shapes); FFN norm -> gate, up; up -> down.
struct ScalingGroup {
  std::string prev;
  std::string prev_bias;  // bias of a linear `prev` (divided by s too), empty for norms
  bool prev_is_linear = false;
  std::vector<std::string> linears;
};
std::vector<ScalingGroup> awq_scaling_groups(const ModelConfig& m, uint32_t layer);

// Architecture keys: general.architecture, general.name, <arch>.context_length, ... (u32 / f32 as llama.cpp
// checks them).
void write_architecture_metadata(GgufWriter& w, const ModelConfig& m);

}  // namespace qz
