#include "qz/model/architecture.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include <charconv>
#include <limits>

#include "qz/core/error.hpp"
#include "qz/io/gguf.hpp"

namespace qz {

namespace {

// Per-layer tensors: HF suffix after "model.layers.N." -> GGUF suffix after "blk.N.". Shared by the
// LLaMA-family architectures below.
struct LayerName {
  std::string_view hf;
  std::string_view gguf;
};
constexpr LayerName kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
// Only for architectures with Q/K norms (ArchitectureInfo::qk_norm): llama.cpp would not load them elsewhere.
constexpr LayerName kQkNormNames[] = {
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
};
constexpr LayerName kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
constexpr std::string_view kIgnoredSuffixes[] = {"rotary_emb.inv_freq"};

uint32_t get_u32(const nlohmann::json& c, const char* key, const std::string& path, std::optional<uint32_t> fallback = {}) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) {
    if (fallback) return *fallback;
    throw InputError(fmt::format("{}: missing \"{}\"", path, key));
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > UINT32_MAX)
    throw InputError(fmt::format("{}: \"{}\" must be a positive integer", path, key));
  return it->get<uint32_t>();
}

// A positive number that float32 holds (GGUF stores these as f32): a value beyond float's range is an error, not inf.
float get_f32(const nlohmann::json& c, const char* key, const std::string& path, float fallback) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw InputError(fmt::format("{}: \"{}\" must be a number", path, key));
  const double v = it->get<double>();
  if (!(v > 0.0) || v > static_cast<double>(std::numeric_limits<float>::max()) ||
      v < static_cast<double>(std::numeric_limits<float>::min()))
    throw InputError(fmt::format("{}: \"{}\" is {}: it must be a positive number within float32's range", path, key, v));
  return static_cast<float>(v);
}

}  // namespace

const std::vector<ArchitectureInfo>& architectures() {
  static const std::vector<ArchitectureInfo> table = {
      {"LlamaForCausalLM", "llama", true, false, false},
      {"MistralForCausalLM", "llama", true, false, false},
      {"Qwen2ForCausalLM", "qwen2", false, true, false},
      // Qwen3 (dense): Qwen2 without the required biases, with per-head Q/K norms (llama.cpp's src/models/qwen3.cpp).
      {"Qwen3ForCausalLM", "qwen3", false, false, true},
  };
  return table;
}

std::string gguf_architecture_names() {
  std::vector<std::string_view> names;
  for (const auto& a : architectures())
    if (std::find(names.begin(), names.end(), a.gguf_name) == names.end()) names.push_back(a.gguf_name);
  return fmt::format("{}", fmt::join(names, ", "));
}

const ArchitectureInfo& find_architecture(std::string_view hf_name, const std::string& config_path) {
  for (const auto& a : architectures())
    if (a.hf_name == hf_name) return a;
  std::string known;
  for (const auto& a : architectures()) known += (known.empty() ? "" : ", ") + std::string(a.hf_name);
  throw InputError(fmt::format("{}: architecture '{}' is not supported (supported: {})", config_path, hf_name, known));
}

namespace {
ModelConfig parse_model_config_of(const nlohmann::json& c, const std::string& path, const std::string& name);
}

ModelConfig parse_model_config(const nlohmann::json& c, const std::string& path, const std::string& name) {
  try {
    const ModelConfig m = parse_model_config_of(c, path, name);
    if (m.rms_norm_eps >= 1.0f) throw InputError(fmt::format("{}: \"rms_norm_eps\" is {}: it must be below 1", path, m.rms_norm_eps));
    if (m.head_dim % 2 != 0) throw InputError(fmt::format("{}: the head size {} is odd: RoPE needs pairs", path, m.head_dim));
    return m;
  } catch (const nlohmann::json::exception& e) {  // a key of the wrong JSON type
    throw InputError(fmt::format("{}: {}", path, e.what()));
  }
}

namespace {

ModelConfig parse_model_config_of(const nlohmann::json& c, const std::string& path, const std::string& name) {
  const auto archs = c.find("architectures");
  if (archs == c.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    throw InputError(path + ": missing \"architectures\"");
  ModelConfig m;
  m.arch = &find_architecture((*archs)[0].get<std::string>(), path);
  m.name = name;
  m.embedding_length = get_u32(c, "hidden_size", path);
  m.block_count = get_u32(c, "num_hidden_layers", path);
  m.feed_forward_length = get_u32(c, "intermediate_size", path);
  m.head_count = get_u32(c, "num_attention_heads", path);
  m.head_count_kv = get_u32(c, "num_key_value_heads", path, m.head_count);
  m.context_length = get_u32(c, "max_position_embeddings", path);
  m.vocab_size = get_u32(c, "vocab_size", path, 0u);
  m.head_dim = get_u32(c, "head_dim", path, m.embedding_length / m.head_count);
  m.head_dim_in_config = c.contains("head_dim") && !c["head_dim"].is_null();
  m.rms_norm_eps = get_f32(c, "rms_norm_eps", path, 1e-5f);
  m.rope_freq_base = get_f32(c, "rope_theta", path, 10000.0f);
  if (const auto tie = c.find("tie_word_embeddings"); tie != c.end() && tie->is_boolean()) m.tie_word_embeddings = *tie;
  if (const auto rs = c.find("rope_scaling"); rs != c.end() && rs->is_object()) {
    const auto type_of = [&](const char* key) {
      const auto it = rs->find(key);
      if (it == rs->end() || it->is_null()) return std::string();
      if (!it->is_string()) throw InputError(fmt::format("{}: rope_scaling.{} is not a string", path, key));
      return it->get<std::string>();
    };
    std::string type = type_of("rope_type");
    if (type.empty()) type = type_of("type");
    auto num = [&](const char* key, float fallback) {
      const auto it = rs->find(key);
      if (it == rs->end() || it->is_null()) return fallback;
      if (!it->is_number()) throw InputError(fmt::format("{}: rope_scaling.{} is not a number", path, key));
      return it->get<float>();
    };
    if (type == "linear" || type == "yarn" || type == "llama3") {
      m.rope_scaling_type = type;
      m.rope_scaling_factor = num("factor", type == "llama3" ? 8.0f : 1.0f);
      m.rope_original_context = static_cast<uint32_t>(num("original_max_position_embeddings", type == "llama3" ? 8192.0f : 0.0f));
      if (!(m.rope_scaling_factor > 0.0f)) throw InputError(fmt::format("{}: rope_scaling.factor must be positive", path));
      if (type == "yarn") {
        m.rope_yarn_beta_fast = num("beta_fast", 32.0f);
        m.rope_yarn_beta_slow = num("beta_slow", 1.0f);
        if (!(m.rope_yarn_beta_fast > m.rope_yarn_beta_slow) || !(m.rope_yarn_beta_slow > 0.0f))
          throw InputError(fmt::format("{}: rope_scaling (yarn) needs beta_fast > beta_slow > 0", path));
        if (rs->contains("attention_factor") && !(*rs)["attention_factor"].is_null())
          throw InputError(fmt::format("{}: rope_scaling.attention_factor is not supported (llama.cpp computes the "
                                       "attention factor from rope_scaling.factor)",
                                       path));
      }
      if (type == "llama3") {
        const float low = num("low_freq_factor", 1.0f), high = num("high_freq_factor", 4.0f);
        if (!(high > low) || !(low > 0.0f) || m.rope_original_context == 0)
          throw InputError(fmt::format("{}: rope_scaling (llama3) needs high_freq_factor > low_freq_factor > 0 and "
                                       "original_max_position_embeddings > 0",
                                       path));
        m.rope_freq_factors = llama3_rope_factors(m.rope_freq_base, m.head_dim, m.rope_scaling_factor, low, high,
                                                  static_cast<float>(m.rope_original_context));
      }
    } else if (!type.empty() && type != "default") {
      throw InputError(fmt::format("{}: rope_scaling type '{}' is not supported yet (linear, yarn and llama3 are)", path, type));
    }
  }
  if (m.head_count_kv == 0 || m.head_count % m.head_count_kv != 0)
    throw InputError(fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", path,
                                 m.head_count, m.head_count_kv));
  // Qwen2/Qwen3's sliding-window layers: llama.cpp's qwen2 and qwen3 run full attention in every layer, so a model
  // trained with the window would run differently there.
  if (const auto sw = c.find("use_sliding_window"); sw != c.end() && sw->is_boolean() && sw->get<bool>())
    throw InputError(fmt::format("{}: \"use_sliding_window\" is true: llama.cpp's {} runs every layer with full "
                                 "attention, so this model would not run as trained",
                                 path, m.arch->gguf_name));
  return m;
}

}  // namespace

std::optional<std::string> gguf_tensor_name(const ModelConfig& m, const std::string& hf) {
  for (const auto& s : kIgnoredSuffixes)
    if (hf.ends_with(s)) return std::nullopt;
  for (const auto& g : kGlobalNames)
    if (hf == g.hf) return std::string(g.gguf);
  constexpr std::string_view prefix = "model.layers.";
  if (hf.starts_with(prefix)) {
    const char* begin = hf.data() + prefix.size();
    uint32_t layer = 0;
    const auto [p, ec] = std::from_chars(begin, hf.data() + hf.size(), layer);
    if (ec == std::errc() && p < hf.data() + hf.size() && *p == '.') {
      const std::string_view rest(p + 1, static_cast<size_t>(hf.data() + hf.size() - p - 1));
      for (const auto& l : kLayerNames)
        if (rest == l.hf) return fmt::format("blk.{}.{}", layer, l.gguf);
      if (m.arch->qk_norm)
        for (const auto& l : kQkNormNames)
          if (rest == l.hf) return fmt::format("blk.{}.{}", layer, l.gguf);
    }
  }
  throw InputError(fmt::format("tensor '{}' has no GGUF name for architecture {} (llama.cpp would not load it)", hf,
                               m.arch->hf_name));
}

std::vector<uint32_t> gguf_row_order(const ModelConfig& m, const std::string& hf, size_t rows) {
  if (!m.arch->permute_qk) return {};
  uint32_t heads = 0;
  if (hf.find("self_attn.q_proj.") != std::string::npos) heads = m.head_count;
  else if (hf.find("self_attn.k_proj.") != std::string::npos) heads = m.head_count_kv;
  else return {};
  if (rows % heads != 0 || (rows / heads) % 2 != 0)
    throw InputError(fmt::format("tensor '{}': {} rows cannot be split into {} heads of even size", hf, rows, heads));
  const size_t hd = rows / heads, half = hd / 2;
  std::vector<uint32_t> order(rows);
  for (size_t r = 0; r < rows; ++r) {
    const size_t h = r / hd, within = r % hd, i = within / 2, j = within % 2;
    order[r] = static_cast<uint32_t>(h * hd + j * half + i);
  }
  return order;
}

void write_architecture_metadata(GgufWriter& w, const ModelConfig& m) {
  const std::string a(m.arch->gguf_name);
  w.set("general.architecture", a);
  w.set("general.name", m.name);
  w.set(a + ".context_length", m.context_length);
  w.set(a + ".embedding_length", m.embedding_length);
  w.set(a + ".block_count", m.block_count);
  w.set(a + ".feed_forward_length", m.feed_forward_length);
  w.set(a + ".attention.head_count", m.head_count);
  w.set(a + ".attention.head_count_kv", m.head_count_kv);
  w.set(a + ".attention.layer_norm_rms_epsilon", m.rms_norm_eps);
  w.set(a + ".rope.freq_base", m.rope_freq_base);
  w.set(a + ".rope.dimension_count", m.head_dim);
  if (m.head_dim_in_config || m.head_dim != m.embedding_length / m.head_count) {  // as the converter
    w.set(a + ".attention.key_length", m.head_dim);
    w.set(a + ".attention.value_length", m.head_dim);
  }
  if (m.vocab_size) w.set(a + ".vocab_size", m.vocab_size);
  if (m.rope_scaling_type == "linear" || m.rope_scaling_type == "yarn") {  // llama3: rope_freqs.weight instead
    w.set(a + ".rope.scaling.type", m.rope_scaling_type);
    w.set(a + ".rope.scaling.factor", m.rope_scaling_factor);
    if (m.rope_original_context) w.set(a + ".rope.scaling.original_context_length", m.rope_original_context);
    if (m.rope_scaling_type == "yarn" && (m.rope_yarn_beta_fast != 32.0f || m.rope_yarn_beta_slow != 1.0f)) {
      w.set(a + ".rope.scaling.yarn_beta_fast", m.rope_yarn_beta_fast);
      w.set(a + ".rope.scaling.yarn_beta_slow", m.rope_yarn_beta_slow);
    }
  }
}

std::vector<float> llama3_rope_factors(float base, uint32_t head_dim, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_context) {
  // In float32, as the converter computes it with torch.
  const float low_wavelen = original_context / low_freq_factor, high_wavelen = original_context / high_freq_factor;
  std::vector<float> out;
  for (uint32_t i = 0; i < head_dim; i += 2) {
    const float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(head_dim));
    const float wavelen = 2.0f * static_cast<float>(M_PI) / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(factor);
    } else {
      const float smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

std::vector<ScalingGroup> awq_scaling_groups(const ModelConfig&, uint32_t layer) {
  // Every supported architecture (LLaMA, Mistral, Qwen2, Qwen3) names its blocks the same way.
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  return {
      {p + "input_layernorm.weight", "", false,
       {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"}},
      {p + "self_attn.v_proj.weight", p + "self_attn.v_proj.bias", true, {p + "self_attn.o_proj.weight"}},
      {p + "post_attention_layernorm.weight", "", false, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}},
      {p + "mlp.up_proj.weight", "", true, {p + "mlp.down_proj.weight"}},
  };
}

}  // namespace qz
