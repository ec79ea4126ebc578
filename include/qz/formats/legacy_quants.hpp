// llama.cpp's legacy block formats (blocks of 32 values), bit-exact with ggml's reference quantizers.
#pragma once

#include <cstdint>

#include "qz/formats/format.hpp"
#include "qz/io/ggml_blocks.hpp"

namespace qz {

// Block layouts (bytes, order, x = ...): ggml_blocks.hpp. Rounding, as ggml's reference quantizers:
//   Q8_0: d = max|x| / 127 (float), q = roundf(x * (1/d)) with the unrounded d (half away from zero), d stored as
//         fp16. Importance weights are ignored.
//   Q4_0 / Q5_0: m = the value of largest magnitude (sign kept), d = m / -8 (-16), q = min(15 (31),
//         trunc(x * (1/d) + 8.5 (16.5))). An all-zero block stores d = -0.0.
//   Q4_1 / Q5_1: m = min, d = (max - min) / 15 (31), q = min(15 (31), trunc((x - min) * (1/d) + 0.5)).
// With importance weights (llama.cpp's imatrix path) every element gets the weight
// imatrix[j] * sqrt(sigma2 + x[j]^2), sigma2 = mean of x^2 over the row; Q4_0/Q5_0 then fit the scale by a weighted
// least-squares search over 19 candidate scales (make_qx_quants), Q4_1/Q5_1 fit scale and min by a weighted search
// over 37 candidates (make_qkx3_quants), and the codes come from the winning candidate.
FormatPtr make_q8_0_format();
FormatPtr make_q4_0_format();
FormatPtr make_q4_1_format();
FormatPtr make_q5_0_format();
FormatPtr make_q5_1_format();
// The format of one of the five legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0); std::logic_error for others.
FormatPtr make_legacy_format(GgmlType type);

// Stores one block of 32 codes, with fp16 bits d (and m, for Q4_1 / Q5_1), in the layout of a legacy type. The codes
// are the block's q as the layout holds it: 0..15 (Q4_0, Q4_1), 0..31 (Q5_0, Q5_1), -127..127 (Q8_0).
void encode_legacy_block(GgmlType type, uint16_t d, uint16_t m, const int32_t* codes, uint8_t* dst);

}  // namespace qz
