// Compiled with -ffp-contract=off (see src/CMakeLists.txt): ggml's reference quantizers are plain C without FMA
// contraction, and bit-exactness depends on the same float operations in the same order.
#include "qz/formats/legacy_quants.hpp"

#include <cmath>
#include <cstring>

#include "qz/core/half.hpp"

namespace qz {

namespace {

class Q8_0Format final : public Format {
 public:
  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return GgmlType::Q8_0; }
  bool llama_native() const override { return true; }
  size_t block_size() const override { return kQK8_0; }
  size_t block_bytes() const override { return sizeof(BlockQ8_0); }

  void quantize_row(const float* x, uint8_t* dst, size_t n, const float*) const override {
    for (size_t b = 0; b < n / kQK8_0; ++b) {
      const float* xb = x + b * kQK8_0;
      float amax = 0.0f;
      for (int j = 0; j < kQK8_0; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      BlockQ8_0 blk;
      blk.d = fp32_to_fp16(d);
      for (int j = 0; j < kQK8_0; ++j) blk.qs[j] = static_cast<int8_t>(std::round(xb[j] * id));
      std::memcpy(dst + b * sizeof(BlockQ8_0), &blk, sizeof(blk));
    }
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
  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    BlockQ8_0 blk;
    blk.d = static_cast<uint16_t>(g.i[0]);
    for (int j = 0; j < kQK8_0; ++j) blk.qs[j] = static_cast<int8_t>(codes[j]);
    std::memcpy(dst, &blk, sizeof(blk));
  }

 private:
  std::string name_ = "Q8_0";
};

}  // namespace

FormatPtr make_q8_0_format() { return std::make_shared<Q8_0Format>(); }

}  // namespace qz
