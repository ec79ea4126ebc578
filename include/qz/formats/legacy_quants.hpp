// llama.cpp's legacy block formats (blocks of 32 values), bit-exact with ggml's reference quantizers.
#pragma once

#include <cstdint>

#include "qz/formats/format.hpp"

namespace qz {

inline constexpr int kQK8_0 = 32;

// Q8_0 (ggml type 8): 32 values in 34 bytes, 8.5 bits per weight.
//   bytes 0-1  d      fp16 scale
//   bytes 2-33 qs[32] int8 codes, element j in qs[j]
//   x = d * q.  Quantizer (ggml quantize_row_q8_0_ref): d = max|x| / 127 (float), q = roundf(x * (1/d)) with the
//   unrounded d (round half away from zero); d is then stored as fp16. Importance weights are ignored.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");

FormatPtr make_q8_0_format();

}  // namespace qz
