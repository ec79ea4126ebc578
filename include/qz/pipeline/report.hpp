// What a run did: per tensor its format, size and error against the input, and the totals (--json).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qz/pipeline/awq_pass.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

// Error of the stored values against the input values of one tensor.
struct ErrorStats {
  uint64_t count = 0;
  double sum_sq_input = 0.0;
  double sum_sq_error = 0.0;
  double max_abs_error = 0.0;

  void add(const float* input, const float* restored, size_t n);
  void merge(const ErrorStats& o);
  double rmse() const;
  // Signal-to-quantization-noise ratio in dB; nullopt when the error is zero (lossless).
  std::optional<double> sqnr_db() const;
};

// What GPTQ did for one weight. The output error is measured on the calibration data through the Hessian:
// tr(E H E^T) / tr(W H W^T) with E = W - Q, i.e. ||X E^T||^2 / ||X W^T||^2.
struct GptqReport {
  double loss = 0.0;          // sum (w - q)^2 / U_ii^2 / 2, as the reference reports it
  double damp = 0.0;          // damping fraction used
  uint64_t tokens = 0;        // calibration tokens behind the Hessian
  size_t dead_columns = 0;
  double output_rel_error = 0.0;
  std::optional<double> rtn_output_rel_error;  // the same for round-to-nearest (--compare-rtn)
};

struct TensorReport {
  std::string name;
  std::vector<uint64_t> shape;
  std::string format;
  std::string reason;
  bool fallback = false;
  bool weighted = false;  // quantized with imatrix importance
  std::string method = "rtn";
  std::optional<GptqReport> gptq;
  double bits_per_weight = 0.0;
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  ErrorStats error;
  double seconds = 0.0;
};

struct Report {
  std::string input;
  std::string output;
  std::string method;
  unsigned threads = 1;
  bool dry_run = false;
  std::vector<TensorReport> tensors;
  std::vector<SkippedTensor> skipped;
  std::string imatrix;                        // the imatrix file, if one was used
  std::vector<std::string> imatrix_missing;   // quantized tensors it had no entry for
  std::optional<uint32_t> file_type;
  std::string target;
  std::vector<std::string> calibration_missing;
  std::optional<AwqReport> awq;               // the AWQ searches, for --method awq / awq+gptq
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;  // output file size
  uint64_t tensor_bytes = 0;
  uint64_t weights = 0;
  size_t fallbacks = 0;
  uint64_t fallback_bytes = 0;
  double wall_seconds = 0.0;
  uint64_t peak_memory_bytes = 0;
  double bits_per_weight() const {
    return weights ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(weights) : 0.0;
  }
  nlohmann::json to_json() const;
};

// A report of the plan alone (dry run): formats, sizes and reasons, no error figures.
Report report_from_plan(const Plan& plan);

// Peak resident memory of this process so far, in bytes.
uint64_t peak_memory_bytes();

}  // namespace qz
