// Eight-lane GCC vector types and the few lane operations the run-time dispatched kernels share (private to the
// library). Each kernel is written once on these types and compiled twice, for the baseline ISA and for AVX2 (+F16C),
// choosing at run time (core/cpu_features.hpp); the operations are IEEE single precision in both, so the results are
// the same bits. Files that use them build with -Wno-psabi: no 32-byte vector crosses a library interface.
#pragma once

#include <bit>
#include <cstdint>

#include "qz/core/half.hpp"

namespace qz::vec8 {

using VF8 = float __attribute__((vector_size(32)));
using VI8 = int32_t __attribute__((vector_size(32)));
using VF8u = float __attribute__((vector_size(32), aligned(4), may_alias));  // unaligned loads and stores
using VU8x16 = uint8_t __attribute__((vector_size(16)));
using VU8x32 = uint8_t __attribute__((vector_size(32)));

[[gnu::always_inline]] inline VF8 load(const float* p) { return *reinterpret_cast<const VF8u*>(p); }

// m ? a : b per lane (m all ones or all zeros) by bit operations: SSE2 has no blend, and GCC splits a vector ?: on
// it into scalar moves.
template <typename V>
[[gnu::always_inline]] inline V select(VI8 m, V a, V b) {
  return __builtin_bit_cast(V, (__builtin_bit_cast(VI8, a) & m) | (__builtin_bit_cast(VI8, b) & ~m));
}

[[gnu::always_inline]] inline VF8 abs(VF8 v) { return __builtin_bit_cast(VF8, __builtin_bit_cast(VI8, v) & 0x7fffffff); }

// The lowest byte of each 32-bit lane of a and then of b (int32 -> int8/uint8 by truncation), in lane order.
[[gnu::always_inline]] inline VU8x16 low_bytes(VI8 a, VI8 b) {
  return __builtin_shufflevector(__builtin_bit_cast(VU8x32, a), __builtin_bit_cast(VU8x32, b), 0, 4, 8, 12, 16, 20, 24, 28, 32,
                                 36, 40, 44, 48, 52, 56, 60);
}

// float -> fp16 bits, round to nearest even: the F16C instruction where the caller is compiled for it (GCC's
// _Float16 conversion), the bit-exact software conversion otherwise. The same bits either way.
template <bool kF16C>
[[gnu::always_inline]] inline uint16_t to_half(float f) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  if constexpr (kF16C) return __builtin_bit_cast(uint16_t, static_cast<_Float16>(f));
#endif
  return fp32_to_fp16(f);
}

}  // namespace qz::vec8
