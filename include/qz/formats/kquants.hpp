// llama.cpp's K-quants: super-blocks of 256 values with quantized sub-block scales, bit-exact with ggml's reference
// quantizers (no importance) and with its imatrix-weighted quantizers. Block layouts (bytes, order, x = ...):
// ggml_blocks.hpp (BlockQ2_K .. BlockQ6_K); d and dmin are fp16. Q2_K 2.625, Q3_K 3.4375, Q4_K 4.5, Q5_K 5.5 and
// Q6_K 6.5625 bits per weight.
#pragma once

#include "qz/formats/format.hpp"
#include "qz/io/ggml_blocks.hpp"

namespace qz {

FormatPtr make_q2_k_format();
FormatPtr make_q3_k_format();
FormatPtr make_q4_k_format();
FormatPtr make_q5_k_format();
FormatPtr make_q6_k_format();

}  // namespace qz
