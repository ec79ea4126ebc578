// A model's weights as the engine reads them, from a Hugging Face checkpoint or from a GGUF file written by quantize
// or llama.cpp: by GGUF tensor name, as float32, in GGUF layout (llama.cpp's q/k row order for LLaMA-family models),
// one tensor at a time from the memory-mapped file, so the engine never holds the whole model as float.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qz/model/architecture.hpp"

namespace qz {

// A tensor as float: rows x cols, row-major (cols = GGUF ne[0]); 1-D tensors are one row.
struct FloatTensor {
  std::vector<float> values;
  size_t rows = 0, cols = 0;
};

class ModelWeights {
 public:
  virtual ~ModelWeights() = default;
  // A checkpoint directory (config.json + safetensors) or a .gguf file. Throws InputError for an architecture the
  // engine does not run or a file that cannot be read.
  static std::unique_ptr<ModelWeights> open(const std::filesystem::path& path);

  const ModelConfig& config() const { return config_; }
  virtual bool has(const std::string& gguf_name) const = 0;
  // Throws InputError naming the file when the tensor is missing or holds NaN/Inf.
  virtual FloatTensor get(const std::string& gguf_name) const = 0;
  // The directory whose tokenizer encodes this model's text (the checkpoint; for a GGUF file, its directory).
  virtual std::filesystem::path tokenizer_dir() const = 0;

 protected:
  ModelConfig config_;
};

// A model with some of its tensors replaced (calibration block by block: the blocks quantized so far, as their stored
// values read back). Every other tensor, the configuration and the tokenizer are the base model's.
class OverlayWeights final : public ModelWeights {
 public:
  explicit OverlayWeights(const ModelWeights& base) : base_(base) { config_ = base.config(); }
  void replace(const std::string& gguf_name, FloatTensor t) { replaced_[gguf_name] = std::move(t); }
  void forget(const std::string& gguf_name) { replaced_.erase(gguf_name); }
  bool has(const std::string& gguf_name) const override { return replaced_.count(gguf_name) || base_.has(gguf_name); }
  FloatTensor get(const std::string& gguf_name) const override {
    const auto it = replaced_.find(gguf_name);
    return it != replaced_.end() ? it->second : base_.get(gguf_name);
  }
  std::filesystem::path tokenizer_dir() const override { return base_.tokenizer_dir(); }

 private:
  const ModelWeights& base_;
  std::map<std::string, FloatTensor> replaced_;
};

// The model hyper-parameters a GGUF file states (general.architecture, <arch>.block_count, ...).
ModelConfig model_config_from_gguf(const class GgufFile& file);

}  // namespace qz
