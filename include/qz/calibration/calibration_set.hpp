// Calibration activations from safetensors files (docs/calibration.md): per linear layer, its input activations
// [tokens, in_features] (F32, F16 or BF16) under the layer's module name (the weight's name without ".weight",
// e.g. model.layers.0.self_attn.q_proj), or a precomputed Hessian `<module>.hessian` [in, in] with its token count
// `<module>.hessian_tokens`. Layers that read the same input may share one entry: q_proj, k_proj and v_proj of a
// layer; gate_proj and up_proj of a layer. Several files accumulate.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qz/io/safetensors.hpp"

namespace qz {

// One calibration entry feeding a weight: activations [tokens, in], or a precomputed Hessian [in, in]
// (already 2/N sum x x^T) with its token count.
struct CalibInput {
  const SafetensorsFile* file = nullptr;
  const SafetensorsTensor* tensor = nullptr;
  const SafetensorsTensor* hessian_tokens = nullptr;  // set for a precomputed Hessian
  std::string key() const { return file->path().string() + ":" + tensor->name; }
  // A precomputed Hessian's token count (its one-value .hessian_tokens tensor): a positive whole count a double
  // holds exactly, or InputError naming the file and the tensor.
  uint64_t hessian_token_count() const;
};

class CalibrationSet {
 public:
  explicit CalibrationSet(const std::vector<std::filesystem::path>& files);
  // The entries (at most one per file) feeding the weight `weight_name` (a checkpoint name), empty if none.
  std::vector<CalibInput> inputs_of(const std::string& weight_name) const;
  size_t file_count() const { return files_.size(); }
  const std::vector<std::filesystem::path>& paths() const { return paths_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::filesystem::path> paths_;
};

// Throws InputError unless `in` has `columns` input columns (and is square for a Hessian); `weight` names the
// weight it feeds.
void check_calib_width(const CalibInput& in, size_t columns, const std::string& weight);

// The one activation streamer: an activation entry [tokens, columns] (width already checked) converted to float in
// chunks of `chunk` tokens, fn(values, first token, tokens), in order. Throws InputError naming the file, tensor,
// token and column of a NaN/Inf value. Conversion and the check run over `threads` (float32 entries are read in
// place).
void stream_activations(const CalibInput& in, size_t columns, size_t chunk,
                        const std::function<void(const float* x, size_t first_token, size_t tokens)>& fn,
                        unsigned threads = 1);

}  // namespace qz
