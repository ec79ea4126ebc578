// Round-to-nearest (RTN): every value takes the nearest point of the grid its format fits to its block (or, for
// per-tensor grids, to the whole tensor). With an absmax or zero-point integer grid this is the `absmax` /
// `zeropoint` method; with a llama.cpp type it is that type's own reference quantizer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qz/formats/format.hpp"

namespace qz {

// Fits the single grid of a GridScope::Tensor format on all n values of the tensor.
BlockGrid rtn_fit_tensor(const Format& f, const float* x, size_t n);

// Quantizes `rows` rows of `cols` values (row-major) into rows * f.row_bytes(cols) bytes.
// `tensor_grid` is required for GridScope::Tensor formats and ignored otherwise; `importance` (cols values) may be null.
void rtn_quantize_rows(const Format& f, const float* x, size_t rows, size_t cols, const float* importance,
                       const BlockGrid* tensor_grid, uint8_t* dst);

}  // namespace qz
