// Importance (imatrix) for quantization: reading it into the plan, and computing it from calibration activations.
//
// Calibration files (docs/calibration.md): safetensors holding, per linear layer, its input activations
// [tokens, in_features] (F32, F16 or BF16) under the layer's module name (the weight's name without ".weight",
// e.g. model.layers.0.self_attn.q_proj). Layers that read the same input may share one entry: q_proj, k_proj and
// v_proj of a layer; gate_proj and up_proj of a layer. Several files accumulate.
#pragma once

#include <Eigen/Dense>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "qz/io/imatrix.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/pipeline/importance_fwd.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

// Attaches to every quantized tensor of the plan its importance from `m`, found by name (llama.cpp's GGUF names
// match Hugging Face names through their role). Throws InputError when an entry's length does not match the
// tensor's row length; returns the names of quantized tensors the imatrix has no entry for.
std::vector<std::string> attach_importance(Plan& plan, const Imatrix& m, const std::string& imatrix_file);

// Calibration activations from one or more safetensors files.
class CalibrationSet {
 public:
  explicit CalibrationSet(const std::vector<std::filesystem::path>& files);
  // The entries (at most one per file) feeding the weight `weight_name`, empty if none.
  std::vector<CalibInput> inputs_of(const std::string& weight_name) const;
  size_t file_count() const { return files_.size(); }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
};

// Sum of squared activations per input column and token count for every 2-D weight of the checkpoint with
// calibration data, keyed by llama.cpp's tensor name. Weights without data are listed in `missing`.
// Throws InputError for NaN/Inf activations or a width that does not match the weight.
Imatrix compute_imatrix(const Checkpoint& model, const CalibrationSet& calib, unsigned threads,
                        std::vector<std::string>* missing = nullptr);

// One calibration activation entry [tokens, columns] (its width already checked) converted to float in chunks of
// `chunk` tokens: fn(values, first token, tokens). Throws InputError naming the file, tensor, token and column of a
// NaN/Inf value.
void stream_activations(const CalibInput& in, size_t columns, size_t chunk,
                        const std::function<void(const float* x, size_t first_token, size_t tokens)>& fn);

// The GPTQ Hessian 2/N sum x x^T of a weight with `columns` input columns from its calibration entries, streamed
// in chunks. Throws InputError for NaN/Inf activations or shapes that do not match.
Eigen::MatrixXd hessian_of(const std::vector<CalibInput>& inputs, size_t columns, unsigned threads,
                           uint64_t* tokens = nullptr);

}  // namespace qz
