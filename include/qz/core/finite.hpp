// Whether float data holds a NaN or an Inf: the check every input (weights, activations) passes before use.
#pragma once

#include <cstddef>

namespace qz {

// Index of the first NaN/Inf in x[0..n), or SIZE_MAX.
size_t first_non_finite(const float* x, size_t n);

// The same over `threads` threads in fixed pieces (large inputs); the index is the first one whatever the count.
size_t first_non_finite(const float* x, size_t n, unsigned threads);

}  // namespace qz
