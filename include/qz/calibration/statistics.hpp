// What the methods need from calibration activations, computed by streaming them (calibration_set.hpp): GPTQ's
// Hessian, AWQ's per-channel mean |x| with a token sample, and llama.cpp's importance matrix.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <string>
#include <vector>

#include "qz/calibration/calibration_set.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/methods/awq.hpp"

namespace qz {

// The GPTQ Hessian 2/N sum x x^T of a weight with `columns` input columns from its calibration entries. Throws
// InputError for NaN/Inf activations or shapes that do not match.
Eigen::MatrixXd hessian_of(const std::vector<CalibInput>& inputs, size_t columns, unsigned threads,
                           uint64_t* tokens = nullptr);

// mean |x| over every token of the entries, and an evenly strided sample of at most max_tokens tokens (AWQ's
// searches). Throws InputError for precomputed Hessians (AWQ needs the activations) and widths that do not match.
AwqActivations awq_activations_of(const std::vector<CalibInput>& inputs, size_t columns, size_t max_tokens,
                                  const std::string& weight);

// Sum of squared activations per input column and token count for every 2-D weight of the checkpoint with
// calibration data, keyed by llama.cpp's tensor name. Weights without data are listed in `missing`.
Imatrix compute_imatrix(const Checkpoint& model, const CalibrationSet& calib, std::vector<std::string>* missing = nullptr);

}  // namespace qz
