// llama.cpp's K-quants: super-blocks of 256 values with quantized sub-block scales, bit-exact with ggml's reference
// quantizers (no importance) and with its imatrix-weighted quantizers. Byte layouts (d/dmin are fp16):
//
// Q2_K  84 B, 2.625 bpw: scales[16] @0 (per 16 values: low nibble scale, high nibble min), qs[64] @16, d @80,
//       dmin @82.  x = d*(sc&15)*q - dmin*(sc>>4). 2-bit order: per 128-value half h, shift s = 0,2,4,6 takes
//       values 32h*4 + 32*(s/2) + l from bits s of qs[32h + l], l < 32.
// Q3_K 110 B, 3.4375 bpw: hmask[32] @0, qs[64] @32 (low 2 bits, order as Q2_K), scales[12] @96 (16 six-bit
//       scales biased by 32: low 4 bits in byte j (j<8) or high nibble of byte j-8, high 2 bits at bits 2*(j/4) of
//       byte 8 + j%4), d @108.  x = d*(s-32)*(q - 4) with q = low2 + 4*hbit; the high bit of value j is bit j/32
//       of hmask[j%32].
// Q4_K 144 B, 4.5 bpw: d @0, dmin @2, scales[12] @4 (eight 6-bit scales and mins: j<4 scale = b[j]&63,
//       min = b[j+4]&63; j>=4 scale = (b[j+4]&15)|((b[j-4]>>6)<<4), min = (b[j+4]>>4)|((b[j]>>6)<<4)),
//       qs[128] @16 (per 64 values: 32 low nibbles, then 32 high nibbles).  x = d*sc*q - dmin*m.
// Q5_K 176 B, 5.5 bpw: as Q4_K plus qh[32] @16 and qs @48; the fifth bit of value 64c + l is bit 2c of qh[l],
//       of value 64c + 32 + l bit 2c+1.
// Q6_K 210 B, 6.5625 bpw: ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208.  x = d*sc*(q-32); per 128
//       values: ql[l] holds values l (low nibble) and l+64 (high), ql[l+32] values l+32 and l+96, qh[l] bits
//       2k..2k+1 the high bits of value l + 32k.
#pragma once

#include "qz/formats/format.hpp"

namespace qz {

inline constexpr int kQK_K = 256;

FormatPtr make_q2_k_format();
FormatPtr make_q3_k_format();
FormatPtr make_q4_k_format();
FormatPtr make_q5_k_format();
FormatPtr make_q6_k_format();

}  // namespace qz
