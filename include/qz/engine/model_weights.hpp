// A model's weights as the engine reads them, from a Hugging Face checkpoint or from a GGUF file written by quantize
// or llama.cpp: by GGUF tensor name, as float32, in GGUF layout (llama.cpp's q/k row order for LLaMA-family models),
// one tensor at a time from the memory-mapped file, so the engine never holds the whole model as float.
#pragma once

#include <filesystem>
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

// The model hyper-parameters a GGUF file states (general.architecture, <arch>.block_count, ...).
ModelConfig model_config_from_gguf(const class GgufFile& file);

}  // namespace qz
