#include "qz/formats/float_formats.hpp"

#include <bit>
#include <cstring>

#include "qz/core/half.hpp"

namespace qz {

namespace {

class FloatFormat : public Format {
 public:
  FloatFormat(std::string name, GgmlType type, size_t bytes) : name_(std::move(name)), type_(type), bytes_(bytes) {}
  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return type_; }
  bool llama_native() const override { return true; }
  bool is_quantized() const override { return false; }
  size_t block_size() const override { return 1; }
  size_t block_bytes() const override { return bytes_; }
  void fit(const float*, size_t, const float*, BlockGrid&) const override {}

 private:
  std::string name_;
  GgmlType type_;
  size_t bytes_;
};

class F32Format final : public FloatFormat {
 public:
  F32Format() : FloatFormat("F32", GgmlType::F32, 4) {}
  void quantize_row(const float* x, uint8_t* dst, size_t n, const float*) const override {
    if (n > 0) std::memcpy(dst, x, n * 4);  // (a zero-element tensor may come with null pointers)
  }
  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    if (n > 0) std::memcpy(y, src, n * 4);
  }
  int32_t quantize_value(const BlockGrid&, size_t, float x) const override { return std::bit_cast<int32_t>(x); }
  float dequantize_value(const BlockGrid&, size_t, int32_t c) const override { return std::bit_cast<float>(c); }
  void encode(const BlockGrid&, const int32_t* codes, uint8_t* dst) const override { std::memcpy(dst, codes, 4); }
};

template <uint16_t (*ToBits)(float), float (*FromBits)(uint16_t)>
class Float16Format final : public FloatFormat {
 public:
  Float16Format(std::string name, GgmlType type) : FloatFormat(std::move(name), type, 2) {}
  void quantize_row(const float* x, uint8_t* dst, size_t n, const float*) const override {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = ToBits(x[i]);
      std::memcpy(dst + 2 * i, &h, 2);
    }
  }
  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      y[i] = FromBits(h);
    }
  }
  int32_t quantize_value(const BlockGrid&, size_t, float x) const override { return ToBits(x); }
  float dequantize_value(const BlockGrid&, size_t, int32_t c) const override {
    return FromBits(static_cast<uint16_t>(c));
  }
  void encode(const BlockGrid&, const int32_t* codes, uint8_t* dst) const override {
    const auto h = static_cast<uint16_t>(codes[0]);
    std::memcpy(dst, &h, 2);
  }
};

}  // namespace

FormatPtr make_f32_format() { return std::make_shared<F32Format>(); }
FormatPtr make_f16_format() {
  return std::make_shared<Float16Format<fp32_to_fp16, fp16_to_fp32>>("F16", GgmlType::F16);
}
FormatPtr make_bf16_format() {
  return std::make_shared<Float16Format<fp32_to_bf16, bf16_to_fp32>>("BF16", GgmlType::BF16);
}

}  // namespace qz
