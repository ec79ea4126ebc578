// What a tensor is in a LLaMA-family model, from its name: Hugging Face names
// (model.layers.3.self_attn.v_proj.weight) and GGUF names (blk.3.attn_v.weight) alike. The mixes (which type for
// which tensor) and the imatrix lookup work on roles, not on spellings.
#pragma once

#include <string>
#include <string_view>

namespace qz {

enum class TensorRole {
  TokenEmbedding,
  Output,  // lm_head / output.weight
  AttnQ,
  AttnK,
  AttnV,
  AttnQkv,
  AttnOutput,
  FfnGate,
  FfnUp,
  FfnDown,
  Norm,
  Other,
};

struct TensorRoleInfo {
  TensorRole role = TensorRole::Other;
  int layer = -1;  // decoder block index, -1 outside the blocks
};

TensorRoleInfo classify_tensor(std::string_view name);
// The linears of a decoder block (q, k, v, fused qkv, attention output, gate, up, down).
bool is_block_linear(TensorRole role);
std::string_view role_name(TensorRole role);  // "attn_v", "ffn_down", ... (llama.cpp's spelling)

// llama.cpp's name of a weight ("blk.3.attn_v.weight", "output.weight", "token_embd.weight") for a Hugging Face or
// GGUF name of a known projection, embedding or output role; empty otherwise.
std::string gguf_weight_name(std::string_view name);

}  // namespace qz
