// The block layouts of the ggml types the toolkit writes, as ggml's own block structs: the one place their
// geometry (values per block, bytes per block, field offsets) is written down. ggml_types.cpp takes the sizes from
// here and the encoders in formats/ fill these structs field by field. fp16 fields hold IEEE half bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qz {

inline constexpr int kQK4_0 = 32, kQK4_1 = 32, kQK5_0 = 32, kQK5_1 = 32, kQK8_0 = 32;
inline constexpr int kQK_K = 256;  // K-quant super-block
inline constexpr int kKScaleBytes = 12;  // Q4_K / Q5_K: eight 6-bit scales and mins

// Q4_0: x = d * (q - 8). qs[j] holds element j in its low nibble and element j + 16 in its high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Q4_1: x = d * q + m; nibble order as Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// Q5_0: x = d * (q - 16); bit j of qh (little-endian u32) is the fifth bit of element j, low 4 bits as Q4_0.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22 && offsetof(BlockQ5_0, qs) == 6);

// Q5_1: x = d * q + m; qh and qs as Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24 && offsetof(BlockQ5_1, qs) == 8);

// Q8_0: x = d * q, element j in qs[j].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q2_K: per 16 values a byte of scales (low nibble scale, high nibble min); x = d*(sc&15)*q - dmin*(sc>>4).
// 2-bit codes: per 128-value half h and shift s = 0,2,4,6, value 128h + 32*(s/2) + l sits at bits s of qs[32h + l].
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
static_assert(sizeof(BlockQ2_K) == 84 && offsetof(BlockQ2_K, d) == 80);

// Q3_K: x = d*(s-32)*(q-4), q = low 2 bits (order as Q2_K) + 4 * high bit; the high bit of value j is bit j/32 of
// hmask[j%32]. scales: 16 six-bit scales biased by 32, low 4 bits in byte j (j < 8) or the high nibble of byte j-8,
// high 2 bits at bits 2*(j/4) of byte 8 + j%4.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110 && offsetof(BlockQ3_K, scales) == 96 && offsetof(BlockQ3_K, d) == 108);

// Q4_K: x = d*sc*q - dmin*m over 8 sub-blocks of 32 (scales: kKScaleBytes packing of 6-bit scales and mins); qs per
// 64 values: 32 low nibbles, then 32 high nibbles.
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144 && offsetof(BlockQ4_K, qs) == 16);

// Q5_K: as Q4_K plus qh; the fifth bit of value 64c + l is bit 2c of qh[l], of value 64c + 32 + l bit 2c + 1.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176 && offsetof(BlockQ5_K, qh) == 16 && offsetof(BlockQ5_K, qs) == 48);

// Q6_K: x = d*sc*(q-32) over 16 sub-blocks of 16; per 128 values ql[l] holds values l (low nibble) and l+64 (high),
// ql[l+32] values l+32 and l+96, qh[l] bits 2k..2k+1 the high bits of value l + 32k.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210 && offsetof(BlockQ6_K, scales) == 192 && offsetof(BlockQ6_K, d) == 208);

}  // namespace qz
