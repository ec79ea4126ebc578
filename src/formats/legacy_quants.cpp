// Compiled with -ffp-contract=off (see src/CMakeLists.txt): ggml's reference quantizers are plain C without FMA
// contraction, and bit-exactness depends on the same float operations in the same order.
#include "qz/formats/legacy_quants.hpp"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "core/vec8.hpp"
#include "qz/core/cpu_features.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/ggml_search.hpp"

namespace qz {

namespace {

// One block of 32 codes in the layout of Block (codes already offset as the block stores them).
template <typename Block>
void pack_block(uint16_t d, uint16_t m, const int32_t* codes, uint8_t* dst) {
  Block b;
  b.d = d;
  if constexpr (requires { b.m; }) b.m = m;
  if constexpr (std::is_same_v<Block, BlockQ8_0>) {
    for (int j = 0; j < kQK8_0; ++j) b.qs[j] = static_cast<int8_t>(codes[j]);
  } else {
    if constexpr (requires { b.qh; }) {
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
      std::memcpy(b.qh, &qh, 4);
    }
    for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>((codes[j] & 0xF) | ((codes[j + 16] & 0xF) << 4));
  }
  std::memcpy(dst, &b, sizeof(b));
}

using vec8::VF8;
using vec8::VI8;
using vec8::select;
using vec8::to_half;

// max |x| over a block held in four vectors (order-free: |x| is never -0 and inputs are finite).
[[gnu::always_inline]] inline float abs_max(const VF8* v) {
  VF8 a = vec8::abs(v[0]);
  for (int k = 1; k < 4; ++k) {
    const VF8 ak = vec8::abs(v[k]);
    a = select(ak > a, ak, a);
  }
  float amax = a[0];
  for (int l = 1; l < 8; ++l) amax = a[l] > amax ? a[l] : amax;
  return amax;
}

// ggml's reference quantizers of Q4_0, Q4_1, Q5_0 and Q5_1 (the same arithmetic as fit + quantize_value in mode 0,
// which the format tests check byte for byte), on 8-float vectors: the block's 32 values are four vectors, the
// minimum, maximum or largest magnitude is found lane-wise (order-free for finite values; the sign of a zero is
// settled by a sequential scan), and the codes are packed from the vectors straight into dst. Compiled twice, for
// the baseline and for AVX2 + F16C (chosen at run time): the operations are the same IEEE ones (no contraction in
// this file), so both give the same bytes.
template <typename Block, bool kF16C>
[[gnu::always_inline]] inline void reference_rows_impl(const float* x, uint8_t* dst, size_t n) {
  constexpr bool with_min = requires(Block blk) { blk.m; };
  constexpr bool five_bits = requires(Block blk) { blk.qh; };
  constexpr int top = five_bits ? 31 : 15;
  constexpr float offset = with_min ? 0.5f : (five_bits ? 16.5f : 8.5f);
  const VI8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  for (size_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    uint8_t* out = dst + b * sizeof(Block);
    VF8 v[4];
    for (int k = 0; k < 4; ++k) v[k] = vec8::load(xb + 8 * k);
    float d, m = 0.0f;
    if constexpr (!with_min) {
      // ggml keeps the first value of largest magnitude (and +0 when all are zero).
      const float amax = abs_max(v);
      float max = 0.0f;
      if (amax > 0.0f) {  // the lowest index whose magnitude is amax, without a branch per value
        VI8 first = VI8{} + 32;
        for (int k = 3; k >= 0; --k) {
          const VF8 ak = vec8::abs(v[k]);
          first = select<VI8>(ak == amax, lane + 8 * k, first);
        }
        int j = first[0];
        for (int l = 1; l < 8; ++l) j = first[l] < j ? first[l] : j;
        max = xb[j];
      }
      d = max / (five_bits ? -16.0f : -8.0f);
    } else {
      VF8 lo = v[0], hi = v[0];
      for (int k = 1; k < 4; ++k) {
        lo = select(v[k] < lo, v[k], lo);
        hi = select(v[k] > hi, v[k], hi);
      }
      float min = lo[0], max = hi[0];
      for (int l = 1; l < 8; ++l) {
        min = lo[l] < min ? lo[l] : min;
        max = hi[l] > max ? hi[l] : max;
      }
      if (min == 0.0f || max == 0.0f) {  // which zero comes first decides its sign: ggml's sequential scan
        min = FLT_MAX;
        max = -FLT_MAX;
        for (int j = 0; j < 32; ++j) {
          min = xb[j] < min ? xb[j] : min;
          max = xb[j] > max ? xb[j] : max;
        }
      }
      d = (max - min) / static_cast<float>(top);
      m = min;
    }
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    VI8 q[4];
    for (int k = 0; k < 4; ++k) {
      const VF8 t = (with_min ? (v[k] - m) * id : v[k] * id) + offset;
      const VI8 c = __builtin_convertvector(t, VI8);  // truncation, as ggml's (int8_t) cast; t >= 0 in the block
      q[k] = select<VI8>(c < top, c, VI8{} + top);
    }
    const uint16_t dh = to_half<kF16C>(d);
    std::memcpy(out + offsetof(Block, d), &dh, 2);
    if constexpr (with_min) {
      const uint16_t mh = to_half<kF16C>(m);
      std::memcpy(out + offsetof(Block, m), &mh, 2);
    }
    if constexpr (five_bits) {  // bit j of qh is the fifth bit of element j = 8 k + lane
      VI8 bits = VI8{};
      for (int k = 0; k < 4; ++k) bits |= ((q[k] >> 4) & 1) << (lane + 8 * k);
      uint32_t qh = 0;
      for (int l = 0; l < 8; ++l) qh |= static_cast<uint32_t>(bits[l]);
      std::memcpy(out + offsetof(Block, qh), &qh, 4);
    }
    // Byte j holds element j in its low nibble and element j + 16 in its high one.
    const vec8::VU8x16 qs = vec8::low_bytes((q[0] & 15) | ((q[2] & 15) << 4), (q[1] & 15) | ((q[3] & 15) << 4));
    std::memcpy(out + offsetof(Block, qs), &qs, 16);
  }
}

// ggml's reference Q8_0 (d = amax / 127, codes roundf(x * (1/d))) on 8-float vectors: the largest magnitude lane-wise,
// roundf as truncation plus an exact test of the fraction
// v - trunc(v) against one half, and the codes stored by a byte shuffle.
template <bool kF16C>
[[gnu::always_inline]] inline void q8_0_rows_impl(const float* x, uint8_t* dst, size_t n) {
  for (size_t b = 0; b < n / kQK8_0; ++b) {
    const float* xb = x + b * kQK8_0;
    uint8_t* out = dst + b * sizeof(BlockQ8_0);
    VF8 v[4];
    for (int k = 0; k < 4; ++k) v[k] = vec8::load(xb + 8 * k);
    const float d = abs_max(v) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    VI8 q[4];
    for (int k = 0; k < 4; ++k) {
      const VF8 t = v[k] * id;
      const VI8 i = __builtin_convertvector(t, VI8);
      const VF8 r = t - __builtin_convertvector(i, VF8);
      q[k] = i - (r >= 0.5f) + (r <= -0.5f);  // a true lane compare is -1
    }
    const uint16_t dh = to_half<kF16C>(d);
    std::memcpy(out + offsetof(BlockQ8_0, d), &dh, 2);
    const vec8::VU8x16 lo = vec8::low_bytes(q[0], q[1]), hi = vec8::low_bytes(q[2], q[3]);
    std::memcpy(out + offsetof(BlockQ8_0, qs), &lo, 16);
    std::memcpy(out + offsetof(BlockQ8_0, qs) + 16, &hi, 16);
  }
}

[[gnu::target("avx2,f16c")]] void q8_0_rows_avx2(const float* x, uint8_t* dst, size_t n) {
  q8_0_rows_impl<true>(x, dst, n);
}
void q8_0_rows_baseline(const float* x, uint8_t* dst, size_t n) { q8_0_rows_impl<false>(x, dst, n); }

template <typename Block>
[[gnu::target("avx2,f16c")]] void reference_rows_avx2(const float* x, uint8_t* dst, size_t n) {
  reference_rows_impl<Block, true>(x, dst, n);
}
template <typename Block>
void reference_rows_baseline(const float* x, uint8_t* dst, size_t n) {
  reference_rows_impl<Block, false>(x, dst, n);
}

template <typename Block>
void legacy_reference_rows(const float* x, uint8_t* dst, size_t n) {
  if (cpu_has_avx2_f16c()) return reference_rows_avx2<Block>(x, dst, n);
  reference_rows_baseline<Block>(x, dst, n);
}

class Q8_0Format final : public Format {
 public:
  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return GgmlType::Q8_0; }
  bool llama_native() const override { return true; }
  size_t block_size() const override { return kQK8_0; }
  size_t block_bytes() const override { return sizeof(BlockQ8_0); }

  // ggml's reference (q8_0_rows_impl).
  void quantize_row(const float* x, uint8_t* dst, size_t n, const float*) const override {
    if (cpu_has_avx2_f16c()) return q8_0_rows_avx2(x, dst, n);
    q8_0_rows_baseline(x, dst, n);
  }

  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    for (size_t b = 0; b < n / kQK8_0; ++b) {
      BlockQ8_0 blk;
      std::memcpy(&blk, src + b * sizeof(BlockQ8_0), sizeof(blk));
      const float d = fp16_to_fp32(blk.d);
      for (int j = 0; j < kQK8_0; ++j) y[b * kQK8_0 + j] = static_cast<float>(blk.qs[j]) * d;
    }
  }

  // Grid: f[0] = 1/d (unrounded, used to round), f[1] = stored fp16 d as float, i[0] = fp16 bits of d.
  void fit(const float* x, size_t n, const float*, BlockGrid& g) const override {
    float amax = 0.0f;
    for (size_t j = 0; j < n; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    g.f[0] = d != 0.0f ? 1.0f / d : 0.0f;
    g.i[0] = fp32_to_fp16(d);
    g.f[1] = fp16_to_fp32(static_cast<uint16_t>(g.i[0]));
  }
  int32_t quantize_value(const BlockGrid& g, size_t, float x) const override {
    const float q = std::round(x * g.f[0]);
    return static_cast<int32_t>(std::fmin(127.0f, std::fmax(-127.0f, q)));
  }
  float dequantize_value(const BlockGrid& g, size_t, int32_t code) const override {
    return static_cast<float>(code) * g.f[1];
  }
  void code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                       float* down) const override {
    code_neighbours_inline(*this, g, j0, n, codes, value, up, down);
  }

  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    pack_block<BlockQ8_0>(static_cast<uint16_t>(g.i[0]), 0, codes, dst);
  }

 private:
  std::string name_ = "Q8_0";
};

// Q4_0, Q4_1, Q5_0, Q5_1: 32 values, 4 or 5 bits, with or without a min.
// Grid: i[0] = mode (0 reference rounding, 1 rounding of a weighted search, 2 all codes zero), i[1] / i[2] = fp16
// bits of d / m; f[0] = rounding multiplier (1/d, or the search's iscale), f[1] = min subtracted before rounding,
// f[2] / f[3] = stored d / m as floats.
template <typename Block>
class LegacyFormat final : public Format {
  static constexpr bool with_min_ = requires(Block b) { b.m; };
  static constexpr int bits_ = requires(Block b) { b.qh; } ? 5 : 4;
  static constexpr size_t bytes_ = sizeof(Block);

 public:
  LegacyFormat(std::string name, GgmlType type) : name_(std::move(name)), type_(type) {
    if constexpr (with_min_) m_offset_ = offsetof(Block, m);
    if constexpr (bits_ == 5) qh_offset_ = offsetof(Block, qh);
  }

  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return type_; }
  bool llama_native() const override { return true; }
  size_t block_size() const override { return 32; }
  size_t block_bytes() const override { return bytes_; }

  void fit(const float* x, size_t, const float* weights, BlockGrid& g) const override {
    const int nlevels = (1 << bits_) - 1;  // 15 or 31
    float d = 0.0f, m = 0.0f;
    if (weights == nullptr) {
      g.i[0] = 0;
      if (!with_min_) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; ++j) {
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        }
        d = max / static_cast<float>(-(1 << (bits_ - 1)));
        g.f[0] = d != 0.0f ? 1.0f / d : 0.0f;
      } else {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; ++j) {
          if (x[j] < min) min = x[j];
          if (x[j] > max) max = x[j];
        }
        d = (max - min) / static_cast<float>(nlevels);
        m = min;
        g.f[0] = d != 0.0f ? 1.0f / d : 0.0f;
        g.f[1] = min;
      }
    } else if (!with_min_) {
      int8_t L[32];
      bool all_zero = false;
      float iscale = 0.0f;
      d = ggml::make_qx_quants(32, 1 << (bits_ - 1), x, L, weights, &iscale, &all_zero);
      return set_symmetric_searched_grid(d, iscale, all_zero, g);
    } else {
      uint8_t L[32];
      float the_min = 0.0f, iscale = 0.0f, min_used = 0.0f;
      bool degenerate = false;
      d = ggml::make_qkx3_quants(32, nlevels, x, weights, L, &the_min, -0.9f, 0.05f, 36, &iscale, &min_used,
                                 &degenerate);
      return set_searched_grid(d, the_min, iscale, min_used, degenerate, g);
    }
    set_stored(d, m, g);
  }

  // The grid of a block searched by make_qkx3_quants (Q4_1/Q5_1 with importance).
  static void set_searched_grid(float d, float the_min, float iscale, float min_used, bool degenerate, BlockGrid& g) {
    g.i[0] = degenerate ? 2 : 1;
    g.f[0] = iscale;
    g.f[1] = min_used;
    set_stored(d, -the_min, g);
  }

  // The grid of a block searched by make_qx_quants (Q4_0/Q5_0 with importance).
  static void set_symmetric_searched_grid(float d, float iscale, bool all_zero, BlockGrid& g) {
    g.i[0] = all_zero ? 2 : 1;
    g.f[0] = iscale;
    set_stored(d, 0.0f, g);
  }

  static void set_stored(float d, float m, BlockGrid& g) {
    g.i[1] = fp32_to_fp16(d);
    g.i[2] = fp32_to_fp16(m);
    g.f[2] = fp16_to_fp32(static_cast<uint16_t>(g.i[1]));
    g.f[3] = fp16_to_fp32(static_cast<uint16_t>(g.i[2]));
  }

  int32_t quantize_value(const BlockGrid& g, size_t, float x) const override {
    const int top = (1 << bits_) - 1;
    const int half = 1 << (bits_ - 1);
    if (g.i[0] == 2) return 0;
    if (g.i[0] == 0) {
      // Reference rounding: truncation of x/d + offset (x/d as x * (1/d)); offset 8.5 / 16.5, or 0.5 after the min.
      const float v = with_min_ ? (x - g.f[1]) * g.f[0] + 0.5f : x * g.f[0] + (static_cast<float>(half) + 0.5f);
      return static_cast<int32_t>(std::clamp(std::trunc(v), 0.0f, static_cast<float>(top)));
    }
    if (!with_min_) {
      const float v = std::clamp(g.f[0] * x, -4.0e6f, 4.0e6f);
      return half + std::clamp(ggml::nearest_int(v), -half, half - 1);
    }
    const float v = g.f[0] * (x - g.f[1]);
    return v > 0 ? ggml::nearest_int(std::min(v, static_cast<float>(top))) : 0;
  }

  float dequantize_value(const BlockGrid& g, size_t, int32_t code) const override {
    if (with_min_) return static_cast<float>(code) * g.f[2] + g.f[3];
    return static_cast<float>(code - (1 << (bits_ - 1))) * g.f[2];
  }

  // value = d (code - 2^(bits-1)), or d code + m with the min; for any code, not only those quantize_value gives.
  size_t linear_params() const override { return with_min_ ? 2 : 1; }
  void linear_basis(const BlockGrid&, size_t, int32_t code, double* basis) const override {
    if constexpr (with_min_) {
      basis[0] = static_cast<double>(code);
      basis[1] = 1.0;
    } else {
      basis[0] = static_cast<double>(code - (1 << (bits_ - 1)));
    }
  }
  void linear_params_of(const BlockGrid& g, double* p) const override {
    p[0] = g.f[2];
    if constexpr (with_min_) p[1] = g.f[3];
  }
  void set_linear_params(BlockGrid& g, double* p) const override {
    set_stored(static_cast<float>(p[0]), with_min_ ? static_cast<float>(p[1]) : 0.0f, g);
    // quantize_value's searched mode with the stored grid: the nearest code of d (with the min's offset).
    g.i[0] = 1;
    g.f[0] = g.f[2] != 0.0f ? 1.0f / g.f[2] : 0.0f;
    g.f[1] = g.f[3];
    p[0] = g.f[2];
    if constexpr (with_min_) p[1] = g.f[3];
  }

  void code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                       float* down) const override {
    code_neighbours_inline(*this, g, j0, n, codes, value, up, down);
  }

  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    pack_block<Block>(static_cast<uint16_t>(g.i[1]), static_cast<uint16_t>(g.i[2]), codes, dst);
  }

  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    // The layout as run-time values (GCC vectorizes this loop better than its compile-time specializations: Q4_0
    // decodes 2.6x faster so), taken from the block struct.
    const size_t at_qs = qs_offset_, at_qh = qh_offset_, at_m = m_offset_;
    const bool five = five_, with_min = with_min_rt_;
    for (size_t b = 0; b < n / 32; ++b) {
      const uint8_t* blk = src + b * bytes_;
      uint16_t dh, mh = 0;
      std::memcpy(&dh, blk + offsetof(Block, d), 2);
      if (with_min) std::memcpy(&mh, blk + at_m, 2);
      uint32_t qh = 0;
      if (five) std::memcpy(&qh, blk + at_qh, 4);
      const float d = fp16_to_fp32(dh);
      const float m = fp16_to_fp32(mh);
      const int offset = with_min ? 0 : (five ? 16 : 8);
      float* yb = y + b * 32;
      for (int j = 0; j < 16; ++j) {
        int q0 = blk[at_qs + j] & 0xF, q1 = blk[at_qs + j] >> 4;
        if (five) {
          q0 |= static_cast<int>((qh >> j) & 1u) << 4;
          q1 |= static_cast<int>((qh >> (j + 16)) & 1u) << 4;
        }
        if (with_min) {
          yb[j] = static_cast<float>(q0) * d + m;
          yb[j + 16] = static_cast<float>(q1) * d + m;
        } else {
          yb[j] = static_cast<float>(q0 - offset) * d;
          yb[j + 16] = static_cast<float>(q1 - offset) * d;
        }
      }
    }
  }

  // Element weights imatrix[j] * sqrt(sigma2 + x[j]^2), sigma2 = mean x^2 of the whole row.
  void search_weights(const float* x, size_t n, const float* importance, float* weights) const override {
    float sum_x2 = 0;
    for (size_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
    const float sigma2 = sum_x2 / static_cast<float>(n);
    for (size_t j = 0; j < n; ++j) weights[j] = importance[j] * std::sqrt(sigma2 + x[j] * x[j]);
  }

  void quantize_row(const float* x, uint8_t* dst, size_t n, const float* importance) const override {
    if (importance == nullptr) return legacy_reference_rows<Block>(x, dst, n);
    std::vector<float> weights;
    if (importance != nullptr) {
      weights.resize(n);
      LegacyFormat::search_weights(x, n, importance, weights.data());
    }
    int32_t codes[32];
    BlockGrid g;
    size_t b = 0;
    if (!with_min_) {
      // Q4_0/Q5_0 with importance: the make_qx_quants searches of 8 blocks at a time (bit-identical).
      int8_t L[256];
      float d[8], iscale[8];
      bool all_zero[8];
      for (; b + 8 <= n / 32; b += 8) {
        ggml::make_qx_quants_lanes(8, 32, 1 << (bits_ - 1), x + b * 32, L, weights.data() + b * 32, d, iscale, all_zero);
        for (size_t k = 0; k < 8; ++k) {
          set_symmetric_searched_grid(d[k], iscale[k], all_zero[k], g);
          const float* xb = x + (b + k) * 32;
          for (int j = 0; j < 32; ++j) codes[j] = LegacyFormat::quantize_value(g, j, xb[j]);
          LegacyFormat::encode(g, codes, dst + (b + k) * bytes_);
        }
      }
    }
    if (with_min_) {
      // Q4_1/Q5_1 with importance: the make_qkx3_quants searches of 8 blocks at a time (bit-identical, see
      // ggml_search.hpp), then each block as fit() would store it.
      const int nlevels = (1 << bits_) - 1;
      uint8_t L[256];
      float the_min[8], d[8], iscale[8], min_used[8];
      bool degenerate[8];
      for (; b + 8 <= n / 32; b += 8) {
        ggml::search_qkx_lanes(8, 32, nlevels, x + b * 32, weights.data() + b * 32, L, the_min, d, -0.9f, 0.05f, 36,
                               false, iscale, min_used, degenerate);
        for (size_t k = 0; k < 8; ++k) {
          set_searched_grid(d[k], the_min[k], iscale[k], min_used[k], degenerate[k], g);
          const float* xb = x + (b + k) * 32;
          for (int j = 0; j < 32; ++j) codes[j] = LegacyFormat::quantize_value(g, j, xb[j]);
          LegacyFormat::encode(g, codes, dst + (b + k) * bytes_);
        }
      }
    }
    for (; b < n / 32; ++b) {
      const float* xb = x + b * 32;
      LegacyFormat::fit(xb, 32, importance ? weights.data() + b * 32 : nullptr, g);
      for (int j = 0; j < 32; ++j) codes[j] = LegacyFormat::quantize_value(g, j, xb[j]);
      LegacyFormat::encode(g, codes, dst + b * bytes_);
    }
  }

 private:
  std::string name_;
  GgmlType type_;
  size_t qs_offset_ = offsetof(Block, qs), qh_offset_ = 0, m_offset_ = 0;
  bool five_ = bits_ == 5, with_min_rt_ = with_min_;
};

}  // namespace

void encode_legacy_block(GgmlType type, uint16_t d, uint16_t m, const int32_t* codes, uint8_t* dst) {
  switch (type) {
    case GgmlType::Q4_0: return pack_block<BlockQ4_0>(d, m, codes, dst);
    case GgmlType::Q4_1: return pack_block<BlockQ4_1>(d, m, codes, dst);
    case GgmlType::Q5_0: return pack_block<BlockQ5_0>(d, m, codes, dst);
    case GgmlType::Q5_1: return pack_block<BlockQ5_1>(d, m, codes, dst);
    case GgmlType::Q8_0: return pack_block<BlockQ8_0>(d, m, codes, dst);
    default: throw std::logic_error("encode_legacy_block: not a legacy block type");
  }
}

FormatPtr make_legacy_format(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return make_q4_0_format();
    case GgmlType::Q4_1: return make_q4_1_format();
    case GgmlType::Q5_0: return make_q5_0_format();
    case GgmlType::Q5_1: return make_q5_1_format();
    case GgmlType::Q8_0: return make_q8_0_format();
    default: throw std::logic_error("make_legacy_format: not a legacy block type");
  }
}

FormatPtr make_q8_0_format() { return std::make_shared<Q8_0Format>(); }
FormatPtr make_q4_0_format() { return std::make_shared<LegacyFormat<BlockQ4_0>>("Q4_0", GgmlType::Q4_0); }
FormatPtr make_q4_1_format() { return std::make_shared<LegacyFormat<BlockQ4_1>>("Q4_1", GgmlType::Q4_1); }
FormatPtr make_q5_0_format() { return std::make_shared<LegacyFormat<BlockQ5_0>>("Q5_0", GgmlType::Q5_0); }
FormatPtr make_q5_1_format() { return std::make_shared<LegacyFormat<BlockQ5_1>>("Q5_1", GgmlType::Q5_1); }

}  // namespace qz
