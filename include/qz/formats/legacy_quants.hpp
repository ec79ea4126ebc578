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

// Q4_0 (ggml type 2): 32 values in 18 bytes, 4.5 bits per weight.
//   bytes 0-1  d       fp16 scale
//   bytes 2-17 qs[16]  element j (0..15) in the low nibble of qs[j], element j+16 in the high nibble
//   x = d * (q - 8).  Reference quantizer: m = the value of largest magnitude (sign kept), d = m / -8,
//   q = min(15, trunc(x * (1/d) + 8.5)). An all-zero block stores d = -0.0.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");

// Q4_1 (ggml type 3): 32 values in 20 bytes, 5 bits per weight.
//   bytes 0-1 d, bytes 2-3 m (fp16), bytes 4-19 qs[16] (nibble order as Q4_0);  x = d * q + m.
//   Reference quantizer: m = min, d = (max - min) / 15, q = min(15, trunc((x - min) * (1/d) + 0.5)).
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must be 20 bytes");

// Q5_0 (ggml type 6): 32 values in 22 bytes, 5.5 bits per weight.
//   bytes 0-1 d, bytes 2-5 qh (little-endian u32: bit j = fifth bit of element j), bytes 6-21 qs[16] (low 4 bits,
//   nibble order as Q4_0);  x = d * (q - 16).  Reference: d = m / -16, q = min(31, trunc(x * (1/d) + 16.5)).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block must be 22 bytes");

// Q5_1 (ggml type 7): 32 values in 24 bytes, 6 bits per weight.
//   bytes 0-1 d, 2-3 m, 4-7 qh, 8-23 qs[16];  x = d * q + m.  Reference: d = (max - min) / 31,
//   q = trunc((x - min) * (1/d) + 0.5).
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block must be 24 bytes");

// With importance weights (llama.cpp's imatrix path) every element gets the weight
// imatrix[j] * sqrt(sigma2 + x[j]^2), sigma2 = mean of x^2 over the row; Q4_0/Q5_0 then fit the scale by a weighted
// least-squares search over 19 candidate scales (make_qx_quants), Q4_1/Q5_1 fit scale and min by a weighted search
// over 37 candidates (make_qkx3_quants), and the codes come from the winning candidate.
FormatPtr make_q4_0_format();
FormatPtr make_q4_1_format();
FormatPtr make_q5_0_format();
FormatPtr make_q5_1_format();

}  // namespace qz
