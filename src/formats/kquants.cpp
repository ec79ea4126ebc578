// Compiled with -ffp-contract=off: the float operations follow ggml-quants.c exactly (bit-exact blocks).
#include "qz/formats/kquants.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "qz/core/half.hpp"
#include "qz/formats/ggml_search.hpp"

namespace qz {

namespace {

using ggml::nearest_int;

float half_of(int32_t bits) { return fp16_to_fp32(static_cast<uint16_t>(bits)); }
int safe_nearest(float v) { return nearest_int(std::clamp(v, -4.0e6f, 4.0e6f)); }

// Packs 2-bit codes 0..3 of 256 values in the Q2_K/Q3_K order.
void pack_2bit(const int32_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
void unpack_2bit(const uint8_t* qs, int32_t* L) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      for (int s = 0; s < 4; ++s) L[j + l + 32 * s] = (qs[j / 4 + l] >> (2 * s)) & 3;
}

// The 12-byte packing of eight 6-bit scales and mins (Q4_K, Q5_K).
void pack_scale_min_k4(const int32_t* ls, const int32_t* lm, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = static_cast<uint8_t>(ls[j]);
      q[j + 4] = static_cast<uint8_t>(lm[j]);
    } else {
      q[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      q[j - 4] = static_cast<uint8_t>(q[j - 4] | ((ls[j] >> 4) << 6));
      q[j] = static_cast<uint8_t>(q[j] | ((lm[j] >> 4) << 6));
    }
  }
}
void unpack_scale_min_k4(const uint8_t* q, int32_t* ls, int32_t* lm) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      ls[j] = q[j] & 63;
      lm[j] = q[j + 4] & 63;
    } else {
      ls[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
      lm[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
  }
}

// Q3_K's 12-byte packing of sixteen 6-bit biased scales.
void pack_scales_q3(const int32_t* biased, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int l = biased[j];
    if (j < 8) q[j] = static_cast<uint8_t>(l & 0xF);
    else q[j - 8] = static_cast<uint8_t>(q[j - 8] | ((l & 0xF) << 4));
    l >>= 4;
    q[j % 4 + 8] = static_cast<uint8_t>(q[j % 4 + 8] | (l << (2 * (j / 4))));
  }
}
void unpack_scales_q3(const uint8_t* q, int32_t* biased) {
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? q[j] & 0xF : q[j - 8] >> 4;
    biased[j] = low | (((q[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
  }
}

// Shared behaviour: one super-block per block; quantize_row = weights + fit + quantize_value + encode;
// dequantize_row = decode + dequantize_value (the decoder's own arithmetic). Self is the final format class: the
// per-block and per-value steps are called on it directly (no virtual call per value), the rest of the world sees
// the virtual Format interface.
template <typename Self>
class KQuantFormat : public Format {
 public:
  KQuantFormat(std::string name, GgmlType type, size_t bytes) : name_(std::move(name)), type_(type), bytes_(bytes) {}
  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return type_; }
  bool llama_native() const override { return true; }
  size_t block_size() const override { return kQK_K; }
  size_t block_bytes() const override { return bytes_; }

  void code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                       float* down) const override {
    code_neighbours_inline(static_cast<const Self&>(*this), g, j0, n, codes, value, up, down);
  }

  void quantize_row(const float* x, uint8_t* dst, size_t n, const float* importance) const override {
    const Self& self = static_cast<const Self&>(*this);
    std::vector<float> weights;
    if (importance != nullptr) {
      weights.resize(n);
      self.Self::search_weights(x, n, importance, weights.data());
    }
    int32_t codes[kQK_K];
    BlockGrid g;
    for (size_t b = 0; b < n / kQK_K; ++b) {
      const float* xb = x + b * kQK_K;
      self.Self::fit(xb, kQK_K, importance ? weights.data() + b * kQK_K : nullptr, g);
      for (size_t j = 0; j < kQK_K; ++j) codes[j] = self.Self::quantize_value(g, j, xb[j]);
      self.Self::encode(g, codes, dst + b * bytes_);
    }
  }

  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    const Self& self = static_cast<const Self&>(*this);
    int32_t codes[kQK_K];
    BlockGrid g;
    for (size_t b = 0; b < n / kQK_K; ++b) {
      self.Self::decode(src + b * bytes_, g, codes);
      for (size_t j = 0; j < kQK_K; ++j) y[b * kQK_K + j] = self.Self::dequantize_value(g, j, codes[j]);
    }
  }

 protected:
  // imatrix[j] * sqrt(sigma2 + x[j]^2) with sigma2 = factor * mean(x^2) over each super-block.
  static void superblock_weights(const float* x, size_t n, const float* importance, float* w, float factor) {
    for (size_t b = 0; b < n / kQK_K; ++b) {
      const float* xb = x + b * kQK_K;
      float sumx2 = 0;
      for (int j = 0; j < kQK_K; ++j) sumx2 += xb[j] * xb[j];
      const float sigma2 = factor * sumx2 / kQK_K;
      for (int j = 0; j < kQK_K; ++j) w[b * kQK_K + j] = importance[b * kQK_K + j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    }
  }

 private:
  std::string name_;
  GgmlType type_;
  size_t bytes_;
};

// ---- Q2_K: grid i[0..15] scale bytes, i[16] d bits, i[17] dmin bits; f[0..15] d*sc, f[16..31] dmin*m.
class Q2KFormat final : public KQuantFormat<Q2KFormat> {
 public:
  Q2KFormat() : KQuantFormat("Q2_K", GgmlType::Q2_K, sizeof(BlockQ2_K)) {}

  void search_weights(const float* x, size_t n, const float* imp, float* w) const override {
    superblock_weights(x, n, imp, w, 1.0f);
  }

  void fit(const float* x, size_t, const float* weights, BlockGrid& g) const override {
    float mins[16], scales[16];
    uint8_t* L = g.search_codes.data();
    if (weights == nullptr) {
      float w[256];
      float max_scale = 0, max_min = 0;
      for (int l = 0; l < 256; ++l) w[l] = std::fabs(x[l]);
      // make_qkx2_quants(16, 3, ..., -0.5, 0.1, 15, true) on the 16 sub-blocks at once (bit-identical).
      ggml::search_qkx_lanes(16, 16, 3, x, w, L, mins, scales, -0.5f, 0.1f, 15, true);
      for (int j = 0; j < 16; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      const float q4scale = 15.f;
      if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; ++j) g.i[j] = nearest_int(iscale * scales[j]);
        g.i[16] = fp32_to_fp16(max_scale / q4scale);
      } else {
        for (int j = 0; j < 16; ++j) g.i[j] = 0;
        g.i[16] = fp32_to_fp16(0.f);
      }
      if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < 16; ++j) g.i[j] = static_cast<uint8_t>(g.i[j] | (nearest_int(iscale * mins[j]) << 4));
        g.i[17] = fp32_to_fp16(max_min / q4scale);
      } else {
        g.i[17] = fp32_to_fp16(0.f);
      }
    } else {
      float sw[16] = {};
      uint8_t Ls[16], Lm[16];
      for (int j = 0; j < 16; ++j) {
        const float* wj = weights + 16 * j;
        for (int l = 0; l < 16; ++l) sw[j] += wj[l];
      }
      // make_qkx3_quants(16, 3, ..., -0.9, 0.05, 36) on the 16 sub-blocks at once (bit-identical).
      ggml::search_qkx_lanes(16, 16, 3, x, weights, L, mins, scales, -0.9f, 0.05f, 36, false);
      const float dm = ggml::make_qp_quants(16, 15, scales, Ls, sw);
      const float mm = ggml::make_qp_quants(16, 15, mins, Lm, sw);
      g.i[16] = fp32_to_fp16(dm);
      g.i[17] = fp32_to_fp16(mm);
      for (int j = 0; j < 16; ++j) g.i[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    }
    set_derived(g);
  }

  int32_t quantize_value(const BlockGrid& g, size_t j, float x) const override {
    const float d = g.f[j / 16];
    if (d == 0.0f) return g.search_codes[j];
    return std::clamp(safe_nearest((x + g.f[16 + j / 16]) / d), 0, 3);
  }
  float dequantize_value(const BlockGrid& g, size_t j, int32_t code) const override {
    return g.f[j / 16] * static_cast<float>(code) - g.f[16 + j / 16];
  }
  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    BlockQ2_K b;
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(g.i[j]);
    pack_2bit(codes, b.qs);
    b.d = static_cast<uint16_t>(g.i[16]);
    b.dmin = static_cast<uint16_t>(g.i[17]);
    std::memcpy(dst, &b, sizeof(b));
  }
  // Reads a block back into its grid and codes.
  void decode(const uint8_t* src, BlockGrid& g, int32_t* codes) const {
    BlockQ2_K b;
    std::memcpy(&b, src, sizeof(b));
    for (int j = 0; j < 16; ++j) g.i[j] = b.scales[j];
    unpack_2bit(b.qs, codes);
    g.i[16] = b.d;
    g.i[17] = b.dmin;
    set_derived(g);
  }

 private:
  static void set_derived(BlockGrid& g) {
    const float d = half_of(g.i[16]), dmin = half_of(g.i[17]);
    for (int j = 0; j < 16; ++j) {
      g.f[j] = d * static_cast<float>(g.i[j] & 0xF);
      g.f[16 + j] = dmin * static_cast<float>(g.i[j] >> 4);
    }
  }
};

// ---- Q3_K: grid i[0..15] biased 6-bit scales, i[16] d bits; f[0..15] d*(s-32).
class Q3KFormat final : public KQuantFormat<Q3KFormat> {
 public:
  Q3KFormat() : KQuantFormat("Q3_K", GgmlType::Q3_K, sizeof(BlockQ3_K)) {}

  void search_weights(const float* x, size_t n, const float* imp, float* w) const override {
    superblock_weights(x, n, imp, w, 2.0f);
  }

  void fit(const float* x, size_t, const float* weights, BlockGrid& g) const override {
    float scales[16];
    int8_t L[kQK_K];
    if (weights == nullptr) {
      float max_scale = 0, amax = 0;
      ggml::make_q3_quants_lanes(16, 16, 4, x, L, scales);  // make_q3_quants(16, 4, ...) on each sub-block
      for (int j = 0; j < 16; ++j) {
        const float scale = std::fabs(scales[j]);
        if (scale > amax) {
          amax = scale;
          max_scale = scales[j];
        }
      }
      if (max_scale != 0.0f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j) g.i[j] = std::clamp(nearest_int(iscale * scales[j]), -32, 31) + 32;
        g.i[16] = fp32_to_fp16(1 / iscale);
      } else {
        for (int j = 0; j < 16; ++j) g.i[j] = 0;
        g.i[16] = fp32_to_fp16(0.f);
      }
    } else {
      float sw[16];
      for (int j = 0; j < 16; ++j) {
        const float* wj = weights + 16 * j;
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += wj[l];
        sw[j] = sumw;
      }
      {
        float unused_iscale[16];
        bool unused_zero[16];
        // make_qx_quants(16, 4, ...) on the 16 sub-blocks at once (bit-identical).
        ggml::make_qx_quants_lanes(16, 16, 4, x, L, weights, scales, unused_iscale, unused_zero);
      }
      int8_t Ls[16];
      float unused_iscale;
      bool unused_zero;
      const float d_block = ggml::make_qx_quants(16, 32, scales, Ls, sw, &unused_iscale, &unused_zero);
      for (int j = 0; j < 16; ++j) g.i[j] = Ls[j];
      g.i[16] = fp32_to_fp16(d_block);
    }
    for (int j = 0; j < kQK_K; ++j) g.search_codes[j] = static_cast<uint8_t>(L[j]);
    set_derived(g);
  }

  int32_t quantize_value(const BlockGrid& g, size_t j, float x) const override {
    const float d = g.f[j / 16];
    if (d == 0.0f) return g.search_codes[j];
    return std::clamp(safe_nearest(x / d), -4, 3) + 4;
  }
  float dequantize_value(const BlockGrid& g, size_t j, int32_t code) const override {
    return g.f[j / 16] * static_cast<float>(code - 4);
  }
  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    BlockQ3_K b;
    int32_t low[kQK_K];
    std::memset(b.hmask, 0, sizeof(b.hmask));
    // Codes 0..7: bit 2 goes to hmask (bit j / 32 of byte j % 32), bits 0-1 to qs.
    for (int m = 0; m < kQK_K / 32; ++m)
      for (int l = 0; l < 32; ++l) {
        const int32_t c = codes[32 * m + l];
        b.hmask[l] = static_cast<uint8_t>(b.hmask[l] | (((c >> 2) & 1) << m));
        low[32 * m + l] = c & 3;
      }
    pack_2bit(low, b.qs);
    int32_t biased[16];
    for (int j = 0; j < 16; ++j) biased[j] = g.i[j];
    pack_scales_q3(biased, b.scales);
    b.d = static_cast<uint16_t>(g.i[16]);
    std::memcpy(dst, &b, sizeof(b));
  }
  // Reads a block back into its grid and codes.
  void decode(const uint8_t* src, BlockGrid& g, int32_t* codes) const {
    BlockQ3_K b;
    std::memcpy(&b, src, sizeof(b));
    unpack_2bit(b.qs, codes);
    for (int j = 0; j < kQK_K; ++j) codes[j] += ((b.hmask[j % 32] >> (j / 32)) & 1) ? 4 : 0;
    int32_t biased[16];
    unpack_scales_q3(b.scales, biased);
    for (int j = 0; j < 16; ++j) g.i[j] = biased[j];
    g.i[16] = b.d;
    set_derived(g);
  }

 private:
  static void set_derived(BlockGrid& g) {
    const float d = half_of(g.i[16]);
    for (int j = 0; j < 16; ++j) g.f[j] = d * static_cast<float>(static_cast<int8_t>(g.i[j] - 32));
  }
};

// ---- Q4_K / Q5_K: grid i[0..7] scales, i[8..15] mins, i[16] d bits, i[17] dmin bits; f[0..7] d*sc, f[8..15] dmin*m.
class Q45KFormat final : public KQuantFormat<Q45KFormat> {
 public:
  explicit Q45KFormat(int bits)
      : KQuantFormat(bits == 4 ? "Q4_K" : "Q5_K", bits == 4 ? GgmlType::Q4_K : GgmlType::Q5_K, bits == 4 ? sizeof(BlockQ4_K) : sizeof(BlockQ5_K)),
        bits_(bits),
        nmax_((1 << bits) - 1) {}

  void search_weights(const float* x, size_t n, const float* imp, float* w) const override {
    superblock_weights(x, n, imp, w, 2.0f);
  }

  void fit(const float* x, size_t, const float* weights, BlockGrid& g) const override {
    float mins[8], scales[8];
    uint8_t* L = g.search_codes.data();
    if (weights == nullptr) {
      float w[256];
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = std::sqrt(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) w[32 * j + l] = av_x + std::fabs(x[32 * j + l]);
      }
      // make_qkx2_quants on the 8 sub-blocks at once (bit-identical): Q4_K (15, -1, 0.1, 20), Q5_K (31, -0.5, 0.1, 15).
      if (bits_ == 4)
        ggml::search_qkx_lanes(8, 32, 15, x, w, L, mins, scales, -1.f, 0.1f, 20, false);
      else
        ggml::search_qkx_lanes(8, 32, 31, x, w, L, mins, scales, -0.5f, 0.1f, 15, false);
      for (int j = 0; j < 8; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
      const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
      for (int j = 0; j < 8; ++j) {
        g.i[j] = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest_int(inv_scale * scales[j]))));
        g.i[8 + j] = std::min(63, static_cast<int>(static_cast<uint8_t>(nearest_int(inv_min * mins[j]))));
      }
      g.i[16] = fp32_to_fp16(max_scale / 63.f);
      g.i[17] = fp32_to_fp16(max_min / 63.f);
    } else {
      float sw[8];
      uint8_t Ls[8], Lm[8];
      for (int j = 0; j < 8; ++j) {
        const float* wj = weights + 32 * j;
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += wj[l];
        sw[j] = sumw;
      }
      // make_qkx3_quants(32, nmax, ..., -0.9, 0.05, 36) on the 8 sub-blocks at once (bit-identical).
      ggml::search_qkx_lanes(8, 32, nmax_, x, weights, L, mins, scales, -0.9f, 0.05f, 36, false);
      const float d_block = ggml::make_qp_quants(8, 63, scales, Ls, sw);
      const float m_block = ggml::make_qp_quants(8, 63, mins, Lm, sw);
      for (int j = 0; j < 8; ++j) {
        g.i[j] = std::min<int>(63, Ls[j]);
        g.i[8 + j] = std::min<int>(63, Lm[j]);
      }
      g.i[16] = fp32_to_fp16(d_block);
      g.i[17] = fp32_to_fp16(m_block);
    }
    set_derived(g);
  }

  int32_t quantize_value(const BlockGrid& g, size_t j, float x) const override {
    const float d = g.f[j / 32];
    if (d == 0.0f) return g.search_codes[j];
    return std::clamp(safe_nearest((x + g.f[8 + j / 32]) / d), 0, nmax_);
  }
  float dequantize_value(const BlockGrid& g, size_t j, int32_t code) const override {
    return g.f[j / 32] * static_cast<float>(code) - g.f[8 + j / 32];
  }
  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    if (bits_ == 4) encode_block<BlockQ4_K>(g, codes, dst);
    else encode_block<BlockQ5_K>(g, codes, dst);
  }
  // Reads a block back into its grid and codes.
  void decode(const uint8_t* src, BlockGrid& g, int32_t* codes) const {
    if (bits_ == 4) decode_block<BlockQ4_K>(src, g, codes);
    else decode_block<BlockQ5_K>(src, g, codes);
  }

 private:
  template <typename Block>
  static void encode_block(const BlockGrid& g, const int32_t* codes, uint8_t* dst) {
    constexpr bool five = requires(Block b) { b.qh; };
    Block b;
    b.d = static_cast<uint16_t>(g.i[16]);
    b.dmin = static_cast<uint16_t>(g.i[17]);
    pack_scale_min_k4(g.i.data(), g.i.data() + 8, b.scales);
    uint8_t* qs = b.qs;
    uint8_t* qh = nullptr;
    if constexpr (five) {
      qh = b.qh;
      std::memset(qh, 0, sizeof(b.qh));
    }
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        int l1 = codes[64 * c + l], l2 = codes[64 * c + 32 + l];
        if constexpr (five) {
          if (l1 > 15) {
            l1 -= 16;
            qh[l] = static_cast<uint8_t>(qh[l] | (1 << (2 * c)));
          }
          if (l2 > 15) {
            l2 -= 16;
            qh[l] = static_cast<uint8_t>(qh[l] | (2 << (2 * c)));
          }
        }
        qs[32 * c + l] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
    }
    std::memcpy(dst, &b, sizeof(b));
  }
  template <typename Block>
  static void decode_block(const uint8_t* src, BlockGrid& g, int32_t* codes) {
    constexpr bool five = requires(Block b) { b.qh; };
    Block b;
    std::memcpy(&b, src, sizeof(b));
    g.i[16] = b.d;
    g.i[17] = b.dmin;
    unpack_scale_min_k4(b.scales, g.i.data(), g.i.data() + 8);
    const uint8_t* qs = b.qs;
    const uint8_t* qh = nullptr;
    if constexpr (five) qh = b.qh;
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        codes[64 * c + l] = qs[32 * c + l] & 0xF;
        codes[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        if constexpr (five) {
          codes[64 * c + l] += ((qh[l] >> (2 * c)) & 1) ? 16 : 0;
          codes[64 * c + 32 + l] += ((qh[l] >> (2 * c + 1)) & 1) ? 16 : 0;
        }
      }
    }
    set_derived(g);
  }

  static void set_derived(BlockGrid& g) {
    const float d = half_of(g.i[16]), dmin = half_of(g.i[17]);
    for (int j = 0; j < 8; ++j) {
      g.f[j] = d * static_cast<float>(g.i[j]);
      g.f[8 + j] = dmin * static_cast<float>(g.i[8 + j]);
    }
  }
  int bits_;
  int nmax_;
};

// ---- Q6_K: grid i[0..15] int8 scales, i[16] d bits, i[17] all-zero block; f[0..15] d*sc.
class Q6KFormat final : public KQuantFormat<Q6KFormat> {
 public:
  Q6KFormat() : KQuantFormat("Q6_K", GgmlType::Q6_K, sizeof(BlockQ6_K)) {}

  // Q6_K weighs each value by its importance alone.
  void fit(const float* x, size_t, const float* weights, BlockGrid& g) const override {
    float scales[16];
    int8_t L[kQK_K];
    float max_scale = 0, max_abs_scale = 0;
    float unused_iscale[16];
    bool unused_zero[16];
    // make_qx_quants(16, 32, ...) on the 16 sub-blocks at once (bit-identical).
    ggml::make_qx_quants_lanes(16, 16, 32, x, L, weights, scales, unused_iscale, unused_zero);
    for (int ib = 0; ib < 16; ++ib) {
      const float abs_scale = std::fabs(scales[ib]);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scales[ib];
      }
    }
    g.i[17] = max_abs_scale < ggml::kGroupMaxEps ? 1 : 0;
    if (g.i[17]) {
      for (int j = 0; j < 16; ++j) g.i[j] = 0;
      g.i[16] = fp32_to_fp16(0.f);
      for (int j = 0; j < kQK_K; ++j) g.search_codes[j] = 0;
    } else {
      const float iscale = -128.f / max_scale;
      g.i[16] = fp32_to_fp16(1 / iscale);
      for (int ib = 0; ib < 16; ++ib)
        g.i[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
      for (int j = 0; j < kQK_K; ++j) g.search_codes[j] = static_cast<uint8_t>(L[j]);
    }
    set_derived(g);
  }

  int32_t quantize_value(const BlockGrid& g, size_t j, float x) const override {
    if (g.i[17]) return 0;
    const float d = g.f[j / 16];
    if (d == 0.0f) return g.search_codes[j];
    return std::clamp(safe_nearest(x / d), -32, 31) + 32;
  }
  float dequantize_value(const BlockGrid& g, size_t j, int32_t code) const override {
    return g.f[j / 16] * static_cast<float>(code - 32);
  }
  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    BlockQ6_K b;
    uint8_t* ql = b.ql;
    uint8_t* qh = b.qh;
    for (int h = 0; h < 2; ++h) {
      const int32_t* L = codes + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[64 * h + l] = static_cast<uint8_t>((L[l] & 0xF) | ((L[l + 64] & 0xF) << 4));
        ql[64 * h + l + 32] = static_cast<uint8_t>((L[l + 32] & 0xF) | ((L[l + 96] & 0xF) << 4));
        qh[32 * h + l] = static_cast<uint8_t>((L[l] >> 4) | ((L[l + 32] >> 4) << 2) | ((L[l + 64] >> 4) << 4) |
                                              ((L[l + 96] >> 4) << 6));
      }
    }
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<int8_t>(g.i[j]);
    b.d = static_cast<uint16_t>(g.i[16]);
    std::memcpy(dst, &b, sizeof(b));
  }
  // Reads a block back into its grid and codes.
  void decode(const uint8_t* src, BlockGrid& g, int32_t* codes) const {
    BlockQ6_K b;
    std::memcpy(&b, src, sizeof(b));
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    for (int h = 0; h < 2; ++h) {
      int32_t* L = codes + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = ql[64 * h + l], hi = ql[64 * h + l + 32], hb = qh[32 * h + l];
        L[l] = (lo & 0xF) | ((hb & 3) << 4);
        L[l + 32] = (hi & 0xF) | (((hb >> 2) & 3) << 4);
        L[l + 64] = (lo >> 4) | (((hb >> 4) & 3) << 4);
        L[l + 96] = (hi >> 4) | (((hb >> 6) & 3) << 4);
      }
    }
    for (int j = 0; j < 16; ++j) g.i[j] = b.scales[j];
    g.i[16] = b.d;
    g.i[17] = 0;
    set_derived(g);
  }

 private:
  static void set_derived(BlockGrid& g) {
    const float d = half_of(g.i[16]);
    for (int j = 0; j < 16; ++j) g.f[j] = d * static_cast<float>(g.i[j]);
  }
};

}  // namespace

FormatPtr make_q2_k_format() { return std::make_shared<Q2KFormat>(); }
FormatPtr make_q3_k_format() { return std::make_shared<Q3KFormat>(); }
FormatPtr make_q4_k_format() { return std::make_shared<Q45KFormat>(4); }
FormatPtr make_q5_k_format() { return std::make_shared<Q45KFormat>(5); }
FormatPtr make_q6_k_format() { return std::make_shared<Q6KFormat>(); }

}  // namespace qz
