// Error types of the toolkit. Every message names the file, tensor or option concerned and what is wrong.
// The CLI maps InputError and UsageError to exit code 2 and every other failure to exit code 1.
#pragma once

#include <stdexcept>
#include <string>

namespace qz {

// Bad input data: a malformed or truncated file, wrong shapes, NaN/Inf weights.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad usage: an unknown option value, an impossible combination of options.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace qz
