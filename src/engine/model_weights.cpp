#include "qz/engine/model_weights.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>

#include "qz/core/error.hpp"
#include "qz/formats/stored_tensor.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/io/gguf_tensor_file.hpp"
#include "qz/model/packed_linear.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

void check_finite(const FloatTensor& t, const std::string& file, const std::string& name) {
  for (size_t i = 0; i < t.values.size(); ++i)
    if (!std::isfinite(t.values[i]))
      throw InputError(fmt::format("{}: tensor '{}': element {} is not finite", file, name, i));
}

class CheckpointWeights final : public ModelWeights {
 public:
  explicit CheckpointWeights(const fs::path& path) : ckpt_(Checkpoint::open(path)) {
    dir_ = fs::is_directory(path) ? path : path.parent_path();
    if (!ckpt_.config()) throw InputError(path.string() + ": no config.json: the engine needs the model's architecture");
    config_ = parse_model_config(*ckpt_.config(), (dir_ / "config.json").string(), dir_.filename().string());
    if (const auto packed = read_packed_scheme(dir_, ckpt_.config()))
      throw InputError(fmt::format("{}: a {} checkpoint: convert it to GGUF first (quantize {} -o model.gguf), then run "
                                   "that",
                                   path.string(), packed->name(), path.string()));
    for (const auto& e : ckpt_.tensors())
      if (const auto g = gguf_tensor_name(config_, e.tensor->name)) by_gguf_[*g] = &e;
    config_.tie_word_embeddings = !by_gguf_.count("output.weight");
  }
  bool has(const std::string& name) const override { return by_gguf_.count(name) > 0; }
  FloatTensor get(const std::string& name) const override {
    const auto it = by_gguf_.find(name);
    if (it == by_gguf_.end()) throw InputError(fmt::format("{}: the model has no tensor '{}'", dir_.string(), name));
    const Checkpoint::Entry& e = *it->second;
    const auto& shape = e.tensor->shape;
    FloatTensor t;
    t.cols = shape.empty() ? 1 : shape.back();
    t.rows = e.tensor->numel() / t.cols;
    std::vector<float> raw(e.tensor->numel());
    convert_to_f32(e.bytes().data(), e.tensor->dtype, raw.data(), raw.size());
    const std::vector<uint32_t> order = gguf_row_order(config_, e.tensor->name, shape.empty() ? 1 : shape.front());
    if (order.empty()) {
      t.values = std::move(raw);
    } else if (t.rows == 1) {  // a permuted bias
      t.values.resize(raw.size());
      for (size_t c = 0; c < t.cols; ++c) t.values[c] = raw[order[c]];
    } else {
      t.values.resize(raw.size());
      for (size_t r = 0; r < t.rows; ++r)
        std::copy_n(raw.data() + static_cast<size_t>(order[r]) * t.cols, t.cols, t.values.data() + r * t.cols);
    }
    check_finite(t, e.file->path().string(), e.tensor->name);
    return t;
  }
  fs::path tokenizer_dir() const override { return dir_; }

 private:
  Checkpoint ckpt_;
  fs::path dir_;
  std::map<std::string, const Checkpoint::Entry*> by_gguf_;
};

class GgufWeights final : public ModelWeights {
 public:
  explicit GgufWeights(const fs::path& path) : file_(path) { config_ = model_config_from_gguf(file_); }
  bool has(const std::string& name) const override { return file_.find_tensor(name) != nullptr; }
  FloatTensor get(const std::string& name) const override {
    const GgufTensorInfo* info = file_.find_tensor(name);
    if (info == nullptr) throw InputError(fmt::format("{}: the model has no tensor '{}'", file_.path().string(), name));
    const StoredTensor s = read_stored_tensor(file_, *info);
    FloatTensor t;
    t.values = decode_stored_tensor(file_, *info);
    t.cols = s.logical_ne[0];
    t.rows = t.values.size() / t.cols;
    check_finite(t, file_.path().string(), name);
    return t;
  }
  fs::path tokenizer_dir() const override { return file_.path().parent_path(); }

 private:
  GgufFile file_;
};

uint32_t u32(const GgufFile& f, const std::string& key, std::optional<uint32_t> fallback = {}) {
  if (const GgufValue* v = f.find(key)) {
    if (const auto* x = v->get_if<uint32_t>()) return *x;
    if (const auto* x = v->get_if<int32_t>()) return static_cast<uint32_t>(*x);
    if (const auto* x = v->get_if<uint64_t>()) return static_cast<uint32_t>(*x);
  }
  if (fallback) return *fallback;
  throw InputError(fmt::format("{}: metadata key '{}' (u32) is missing", f.path().string(), key));
}

float f32(const GgufFile& f, const std::string& key, float fallback) {
  if (const GgufValue* v = f.find(key))
    if (const auto* x = v->get_if<float>()) return *x;
  return fallback;
}

}  // namespace

ModelConfig model_config_from_gguf(const GgufFile& f) {
  const GgufValue* av = f.find("general.architecture");
  const auto* arch = av ? av->get_if<std::string>() : nullptr;
  if (arch == nullptr) throw InputError(f.path().string() + ": no general.architecture: not a model file");
  ModelConfig m;
  for (const auto& a : architectures())
    if (a.gguf_name == *arch) {
      m.arch = &a;
      break;
    }
  if (m.arch == nullptr)
    throw InputError(fmt::format("{}: architecture '{}' is not one the engine runs ({})", f.path().string(), *arch,
                                 gguf_architecture_names()));
  const std::string a = *arch;
  m.name = f.path().stem().string();
  m.embedding_length = u32(f, a + ".embedding_length");
  m.block_count = u32(f, a + ".block_count");
  m.feed_forward_length = u32(f, a + ".feed_forward_length");
  m.head_count = u32(f, a + ".attention.head_count");
  m.head_count_kv = u32(f, a + ".attention.head_count_kv", m.head_count);
  m.context_length = u32(f, a + ".context_length", 0u);
  m.head_dim = u32(f, a + ".attention.key_length", u32(f, a + ".rope.dimension_count", m.embedding_length / m.head_count));
  m.rms_norm_eps = f32(f, a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  m.rope_freq_base = f32(f, a + ".rope.freq_base", 10000.0f);
  if (const GgufValue* v = f.find(a + ".rope.scaling.type"))
    if (const auto* s = v->get_if<std::string>()) m.rope_scaling_type = *s;
  m.rope_scaling_factor = f32(f, a + ".rope.scaling.factor", 1.0f);
  m.rope_original_context = u32(f, a + ".rope.scaling.original_context_length", 0u);
  m.rope_yarn_beta_fast = f32(f, a + ".rope.scaling.yarn_beta_fast", 32.0f);
  m.rope_yarn_beta_slow = f32(f, a + ".rope.scaling.yarn_beta_slow", 1.0f);
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr || emb->ne.size() != 2) throw InputError(f.path().string() + ": no 2-D token_embd.weight");
  m.vocab_size = static_cast<uint32_t>(emb->ne[1]);
  m.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {  // llama3 rope scaling, as llama.cpp reads it
    m.rope_freq_factors = decode_stored_tensor(f, *rf);
    if (m.rope_freq_factors.size() != m.head_dim / 2)
      throw InputError(fmt::format("{}: rope_freqs.weight has {} values for a head of {} (expected {})", f.path().string(),
                                   m.rope_freq_factors.size(), m.head_dim, m.head_dim / 2));
    for (const float v : m.rope_freq_factors)
      if (!(v > 0.0f) || !std::isfinite(v))
        throw InputError(fmt::format("{}: rope_freqs.weight holds {}: factors must be positive", f.path().string(), v));
  }
  return m;
}

std::unique_ptr<ModelWeights> ModelWeights::open(const fs::path& path) {
  if (is_gguf_file(path)) return std::make_unique<GgufWeights>(path);
  return std::make_unique<CheckpointWeights>(path);
}

}  // namespace qz
