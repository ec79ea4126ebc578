// AWQ over a planned model: for every scaling group of every decoder block (model/architecture.hpp), search the
// input scales on the group's calibration inputs, fold them (as TensorTransforms the quantizer applies while
// reading: the following linears' columns times s, the norm or previous linear's rows divided by s), then search
// the clipping bounds of every linear but q/k on the scaled weights and scaled inputs. The plan is then quantized
// as usual (round-to-nearest, or GPTQ for awq+gptq with its Hessian rescaled to the scaled inputs).
//
// All searches are made on the original weights and inputs, as the reference does (llm-awq, AutoAWQ); clipping
// after all scales are known. Only one group's weights and one group's sampled activations are held at a time.
#pragma once

#include <functional>
#include <optional>

#include "qz/calibration/calibration_set.hpp"
#include "qz/methods/awq.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/report.hpp"

namespace qz {

// What the pass reports as it goes: after each group's scale search and after each clipping search.
struct AwqProgress {
  std::function<void(size_t done, size_t total, const AwqGroupReport&)> group;
  std::function<void(size_t done, size_t total, const AwqClipReport&)> clip;
};

// Runs the searches with the plan's AWQ settings and attaches the transforms to `plan` (made with --method awq or
// awq+gptq). Throws InputError for a group without calibration data (unless --allow-missing-calib: that group keeps
// s = 1), for calibration activations of the wrong width or with NaN/Inf, and for precomputed Hessians (AWQ needs
// the activations).
AwqReport apply_awq(Plan& plan, const CalibrationSet& calib, const AwqProgress& progress = {});

// The same with the activations from elsewhere (the engine on calibration text): the group's activations for its
// first linear (`cols` input columns), nothing when there are none. Groups are asked for block by block, in order.
// `modules`, when given, offers AutoAWQ's module objective for a group (its linears in the group's order); an empty
// loss keeps the linears' own output error.
using AwqActivationSource = std::function<std::optional<AwqActivations>(const TensorPlan& first_linear, size_t cols)>;
using AwqModuleLossSource = std::function<AwqModuleLoss(const std::vector<TensorPlan*>& linears)>;
AwqReport apply_awq(Plan& plan, const AwqActivationSource& source, const AwqProgress& progress = {},
                    const AwqModuleLossSource& modules = {});

}  // namespace qz
