// CalibInput, shared by the plan and the calibration code.
#pragma once

#include <string>

#include "qz/io/safetensors.hpp"

namespace qz {

// One calibration entry feeding a weight: activations [tokens, in], or a precomputed Hessian [in, in]
// (`<module>.hessian`, already 2/N sum x x^T) with its token count (`<module>.hessian_tokens`, one value).
struct CalibInput {
  const SafetensorsFile* file = nullptr;
  const SafetensorsTensor* tensor = nullptr;
  const SafetensorsTensor* hessian_tokens = nullptr;  // set for a precomputed Hessian
  std::string key() const { return file->path().string() + ":" + tensor->name; }
};

}  // namespace qz
