#include "qz/model/tensor_roles.hpp"

#include <charconv>

namespace qz {

namespace {

struct Spelling {
  std::string_view fragment;  // searched in the part of the name after the layer prefix
  TensorRole role;
};

// One table for both spellings; the first fragment found wins (so "attn_qkv" precedes "attn_q").
constexpr Spelling kSpellings[] = {
    {"self_attn.qkv_proj", TensorRole::AttnQkv}, {"attn_qkv", TensorRole::AttnQkv},
    {"self_attn.q_proj", TensorRole::AttnQ},     {"attn_q.", TensorRole::AttnQ},
    {"self_attn.k_proj", TensorRole::AttnK},     {"attn_k.", TensorRole::AttnK},
    {"self_attn.v_proj", TensorRole::AttnV},     {"attn_v.", TensorRole::AttnV},
    {"self_attn.o_proj", TensorRole::AttnOutput}, {"attn_output", TensorRole::AttnOutput},
    {"mlp.gate_proj", TensorRole::FfnGate},      {"ffn_gate.", TensorRole::FfnGate},
    {"mlp.up_proj", TensorRole::FfnUp},          {"ffn_up.", TensorRole::FfnUp},
    {"mlp.down_proj", TensorRole::FfnDown},      {"ffn_down.", TensorRole::FfnDown},
    {"layernorm", TensorRole::Norm},             {"_norm", TensorRole::Norm},
};

// Parses "<prefix><digits>." at the start of `name`, returning the layer and the rest.
bool take_layer(std::string_view& name, std::string_view prefix, int& layer) {
  if (!name.starts_with(prefix)) return false;
  std::string_view rest = name.substr(prefix.size());
  const auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
  if (ec != std::errc() || p == rest.data() + rest.size() || *p != '.') return false;
  name = rest.substr(static_cast<size_t>(p - rest.data()) + 1);
  return true;
}

}  // namespace

TensorRoleInfo classify_tensor(std::string_view name) {
  TensorRoleInfo info;
  if (name == "lm_head.weight" || name == "output.weight") {
    info.role = TensorRole::Output;
    return info;
  }
  if (name == "model.embed_tokens.weight" || name == "token_embd.weight") {
    info.role = TensorRole::TokenEmbedding;
    return info;
  }
  if (name == "model.norm.weight" || name == "output_norm.weight") {
    info.role = TensorRole::Norm;
    return info;
  }
  std::string_view rest = name;
  if (!take_layer(rest, "model.layers.", info.layer) && !take_layer(rest, "blk.", info.layer)) return info;
  for (const auto& s : kSpellings) {
    if (rest.find(s.fragment) != std::string_view::npos) {
      info.role = s.role;
      return info;
    }
  }
  return info;
}

std::string_view role_name(TensorRole role) {
  switch (role) {
    case TensorRole::TokenEmbedding: return "token_embd";
    case TensorRole::Output: return "output";
    case TensorRole::AttnQ: return "attn_q";
    case TensorRole::AttnK: return "attn_k";
    case TensorRole::AttnV: return "attn_v";
    case TensorRole::AttnQkv: return "attn_qkv";
    case TensorRole::AttnOutput: return "attn_output";
    case TensorRole::FfnGate: return "ffn_gate";
    case TensorRole::FfnUp: return "ffn_up";
    case TensorRole::FfnDown: return "ffn_down";
    case TensorRole::Norm: return "norm";
    case TensorRole::Other: return "other";
  }
  return "other";
}

std::string gguf_weight_name(std::string_view name) {
  const TensorRoleInfo r = classify_tensor(name);
  switch (r.role) {
    case TensorRole::Output: return "output.weight";
    case TensorRole::TokenEmbedding: return "token_embd.weight";
    case TensorRole::Norm:
    case TensorRole::Other: return {};
    default:
      if (!name.ends_with(".weight")) return {};
      return "blk." + std::to_string(r.layer) + "." + std::string(role_name(r.role)) + ".weight";
  }
}

bool is_block_linear(TensorRole role) {
  switch (role) {
    case TensorRole::AttnQ: case TensorRole::AttnK: case TensorRole::AttnV: case TensorRole::AttnQkv:
    case TensorRole::AttnOutput: case TensorRole::FfnGate: case TensorRole::FfnUp: case TensorRole::FfnDown:
      return true;
    default:
      return false;
  }
}

}  // namespace qz
