// AWQ over a planned model: for every scaling group of every decoder block (model/architecture.hpp), search the
// input scales on the group's calibration inputs, fold them (as TensorTransforms the quantizer applies while
// reading: the following linears' columns times s, the norm or previous linear's rows divided by s), then search
// the clipping bounds of every linear but q/k on the scaled weights and scaled inputs. The plan is then quantized
// as usual (round-to-nearest, or GPTQ for awq+gptq with its Hessian rescaled to the scaled inputs).
//
// All searches are made on the original weights and inputs, as the reference does (llm-awq, AutoAWQ); clipping
// after all scales are known. Only one group's weights and one group's sampled activations are held at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qz/pipeline/options.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

class CalibrationSet;

struct AwqGroupReport {
  std::string prev;                  // GGUF name of the tensor the scales are divided into
  std::vector<std::string> linears;  // GGUF names of the scaled weights
  double alpha = 0.0;                // best ratio; -1 when the group fell back to s = 1
  double loss = 0.0;                 // output MSE of the group's linears at the best alpha
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
  nlohmann::json to_json() const;
};

// What the pass reports as it goes: after each group's scale search and after each clipping search.
struct AwqProgress {
  std::function<void(size_t done, size_t total, const AwqGroupReport&)> group;
  std::function<void(size_t done, size_t total, const AwqClipReport&)> clip;
};

// Runs the searches and attaches the transforms to `plan` (made with --method awq or awq+gptq). Throws InputError
// for a group without calibration data (unless --allow-missing-calib: that group keeps s = 1), for calibration
// activations of the wrong width or with NaN/Inf, and for precomputed Hessians (AWQ needs the activations).
AwqReport apply_awq(Plan& plan, const CalibrationSet& calib, const QuantizeOptions& opts,
                    const AwqProgress& progress = {});

}  // namespace qz
