// What a run did: per tensor its format, size and error against the input, and the totals (--json).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

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
  size_t output_error_rows = 0;  // the output rows it was measured on: all, or 512 evenly spaced ones
  std::optional<double> rtn_output_rel_error;  // the same for round-to-nearest (--compare-rtn)
  // Where the time went: accumulating the Hessian (0 when an earlier tensor's was reused, and for calibration text,
  // whose Hessians are accumulated during the block-by-block pass), damping + Cholesky +
  // inverse, the column loop with its lazy-batch products, the refinement, and the output-error measurement.
  double hessian_seconds = 0.0, factor_seconds = 0.0, update_seconds = 0.0, refine_seconds = 0.0,
         output_error_seconds = 0.0;
  double refine_gain = 0.0;  // how much the refinement lowered the summed objective (w - q)^T H (w - q)
};

// What AWQ's searches found (pipeline/awq_pass.hpp).
struct AwqGroupReport {
  std::string prev;                  // GGUF name of the tensor the scales are divided into
  std::vector<std::string> linears;  // GGUF names of the scaled weights
  double alpha = 0.0;                // best ratio; -1 when the group fell back to s = 1
  std::string objective = "linear outputs";  // what `loss` measures: the linears' outputs, or the module they feed
  double loss = 0.0;                 // output MSE (of `objective`) at the best alpha
  double loss_unscaled = 0.0;        // the same at s = 1 (plain round-to-nearest)
  bool fell_back = false;            // non-finite losses: s = 1 kept
  std::string skipped;               // why the group was not scaled (empty if it was)
  uint64_t tokens = 0;               // calibration tokens behind mean |x|
  double seconds = 0.0;              // scale search
};

struct AwqClipReport {
  std::string tensor;         // GGUF name
  double mean_shrink = 1.0;   // mean of bound / max|w| over its groups
  double seconds = 0.0;
};

struct AwqReport {
  bool duo_scaling = false;
  bool clip = false;
  size_t max_tokens = 0;
  std::vector<AwqGroupReport> groups;
  std::vector<AwqClipReport> clips;
  double search_seconds = 0.0;  // scales and clipping, all groups
  size_t fallbacks() const;
};

struct TensorReport {
  std::string name;
  std::vector<uint64_t> shape;
  std::string format;
  std::string ggml_type;  // the GGUF tensor type it is stored as ("Q4_1" for int4_asym_g32, "I8" for own layouts)
  std::string reason;
  bool fallback = false;
  bool weighted = false;  // quantized with imatrix importance
  bool quantized = false; // stored in a quantized (not float) format
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
  std::vector<std::string> output_parts;  // a split GGUF: every part, in order (output is the first)
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
  std::optional<CalibrationUse> calibration;  // what --calib held and how it was used
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
};

// The --json report: one document with the run, every tensor, the AWQ searches and the totals.
nlohmann::json to_json(const Report& r);

// A report of the plan alone (dry run): formats, sizes and reasons, no error figures. `input` and `output` name the
// files.
Report report_from_plan(const Plan& plan, const std::string& input = {}, const std::string& output = {});

// Peak resident memory of this process so far, in bytes.
uint64_t peak_memory_bytes();

}  // namespace qz
