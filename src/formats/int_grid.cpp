#include "qz/formats/int_grid.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/legacy_quants.hpp"

namespace qz {

std::string int_format_name(const IntGridSpec& s) {
  const char* kind = s.symmetric ? "sym" : "asym";
  switch (s.granularity) {
    case Granularity::Group: return fmt::format("int{}_{}_g{}", s.bits, kind, s.group);
    case Granularity::Row: return fmt::format("int{}_{}_row", s.bits, kind);
    case Granularity::Tensor: return fmt::format("int{}_{}_tensor", s.bits, kind);
  }
  return {};
}

std::optional<IntGridSpec> parse_int_format_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view s = lower;
  if (!s.starts_with("int")) return std::nullopt;
  s.remove_prefix(3);
  IntGridSpec spec;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), spec.bits);
  if (ec != std::errc()) return std::nullopt;
  s.remove_prefix(static_cast<size_t>(p - s.data()));
  if (s.starts_with("_sym_")) {
    spec.symmetric = true;
    s.remove_prefix(5);
  } else if (s.starts_with("_asym_")) {
    spec.symmetric = false;
    s.remove_prefix(6);
  } else {
    return std::nullopt;
  }
  if (s == "row") {
    spec.granularity = Granularity::Row;
  } else if (s == "tensor") {
    spec.granularity = Granularity::Tensor;
  } else if (s.starts_with("g")) {
    s.remove_prefix(1);
    auto [q, ec2] = std::from_chars(s.data(), s.data() + s.size(), spec.group);
    if (ec2 != std::errc() || q != s.data() + s.size()) return std::nullopt;
    spec.granularity = Granularity::Group;
  } else {
    return std::nullopt;
  }
  if (spec.bits < 2 || spec.bits > 8 || (spec.granularity == Granularity::Group && spec.group == 0))
    return std::nullopt;
  return spec;
}

std::optional<GgmlType> native_storage(const IntGridSpec& spec, size_t row_length) {
  const size_t len = spec.granularity == Granularity::Group ? spec.group : row_length;
  if (len == 0 || len % 32 != 0) return std::nullopt;
  if (spec.symmetric) {
    if (spec.bits == 4) return GgmlType::Q4_0;
    if (spec.bits == 5) return GgmlType::Q5_0;
    if (spec.bits == 8) return GgmlType::Q8_0;
  } else {
    if (spec.bits == 4) return GgmlType::Q4_1;
    if (spec.bits == 5) return GgmlType::Q5_1;
  }
  return std::nullopt;
}

void validate_int_spec(const IntGridSpec& spec) {
  if (spec.bits < 2 || spec.bits > 8) throw UsageError(fmt::format("--bits {}: integer grids take 2..8 bits", spec.bits));
  if (spec.granularity == Granularity::Group && spec.group == 0) throw UsageError("--group-size must be positive");
}

namespace {

// Packs `count` codes of `bits` bits LSB-first into dst (which must be zeroed).
void pack_codes(const int32_t* codes, size_t count, int bits, uint8_t* dst) {
  if (bits == 8) {
    for (size_t j = 0; j < count; ++j) dst[j] = static_cast<uint8_t>(codes[j]);
    return;
  }
  if (bits == 4) {
    for (size_t j = 0; j + 1 < count; j += 2) dst[j / 2] = static_cast<uint8_t>(codes[j] | (codes[j + 1] << 4));
    if (count % 2) dst[count / 2] = static_cast<uint8_t>(codes[count - 1]);
    return;
  }
  size_t bit = 0;
  for (size_t j = 0; j < count; ++j, bit += static_cast<size_t>(bits)) {
    const uint32_t v = static_cast<uint32_t>(codes[j]) << (bit % 8);
    dst[bit / 8] = static_cast<uint8_t>(dst[bit / 8] | (v & 0xFF));
    if ((bit % 8) + static_cast<size_t>(bits) > 8) dst[bit / 8 + 1] = static_cast<uint8_t>(dst[bit / 8 + 1] | (v >> 8));
  }
}

int32_t unpack_code(const uint8_t* src, size_t j, int bits) {
  const size_t bit = j * static_cast<size_t>(bits);
  uint32_t v = src[bit / 8];
  if ((bit % 8) + static_cast<size_t>(bits) > 8) v |= static_cast<uint32_t>(src[bit / 8 + 1]) << 8;
  return static_cast<int32_t>((v >> (bit % 8)) & ((1u << bits) - 1u));
}

class IntGridFormat final : public Format {
 public:
  IntGridFormat(const IntGridSpec& spec, size_t row_length)
      : spec_(spec),
        name_(int_format_name(spec)),
        bs_(spec.granularity == Granularity::Group ? spec.group : row_length),
        header_(spec.symmetric ? 2 : 3),
        code_bytes_((bs_ * static_cast<size_t>(spec.bits) + 7) / 8),
        maxq_((1 << spec.bits) - 1),
        half_((1 << (spec.bits - 1)) - 1),
        offset_(1 << (spec.bits - 1)),
        native_(native_storage(spec, row_length)) {
    if (native_) {
      decoder_ = make_legacy_format(*native_);
      sub_bytes_ = ggml_type_traits(*native_).type_size;
    }
  }

  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return native_ ? *native_ : GgmlType::I8; }
  bool llama_native() const override { return native_.has_value(); }
  size_t block_size() const override { return bs_; }
  size_t block_bytes() const override { return native_ ? bs_ / 32 * sub_bytes_ : header_ + code_bytes_; }
  GridScope scope() const override {
    return spec_.granularity == Granularity::Tensor ? GridScope::Tensor : GridScope::Block;
  }

  // Grid: f[0] = 1/d (of the stored d), f[1] = stored d, i[0] = fp16 bits of d, i[1] = zero (asym) or 2^(b-1);
  // asymmetric grids stored as Q4_1 / Q5_1 also f[2] = the stored min m = fp16(-zero * d), i[2] = its fp16 bits.
  void fit(const float* x, size_t n, const float*, BlockGrid& g) const override {
    float d = 0.0f;
    float lo = 0.0f;
    if (spec_.symmetric) {
      float amax = 0.0f;
      for (size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
      d = amax / static_cast<float>(half_);
    } else {
      float hi = 0.0f;
      for (size_t j = 0; j < n; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
      }
      d = (hi - lo) / static_cast<float>(maxq_);
    }
    g.i[0] = fp32_to_fp16(d);
    g.f[1] = fp16_to_fp32(static_cast<uint16_t>(g.i[0]));
    g.f[0] = g.f[1] != 0.0f ? 1.0f / g.f[1] : 0.0f;
    if (spec_.symmetric) {
      g.i[1] = offset_;
    } else {
      const float z = std::nearbyint(-lo * g.f[0]);
      g.i[1] = static_cast<int32_t>(std::clamp(z, 0.0f, static_cast<float>(maxq_)));
      if (native_) {
        g.i[2] = fp32_to_fp16(-static_cast<float>(g.i[1]) * g.f[1]);
        g.f[2] = fp16_to_fp32(static_cast<uint16_t>(g.i[2]));
      }
    }
  }

  int32_t quantize_value(const BlockGrid& g, size_t, float x) const override {
    if (spec_.symmetric) {
      const float q = std::nearbyint(x * g.f[0]);
      return static_cast<int32_t>(std::clamp(q, -static_cast<float>(half_), static_cast<float>(half_))) + offset_;
    }
    if (native_) return static_cast<int32_t>(std::clamp(std::nearbyint((x - g.f[2]) * g.f[0]), 0.0f, top()));
    return static_cast<int32_t>(std::clamp(std::nearbyint(x * g.f[0]) + static_cast<float>(g.i[1]), 0.0f, top()));
  }

  float dequantize_value(const BlockGrid& g, size_t, int32_t code) const override {
    if (native_ && !spec_.symmetric) return static_cast<float>(code) * g.f[1] + g.f[2];  // as Q4_1 / Q5_1 decode
    return static_cast<float>(code - g.i[1]) * g.f[1];
  }

  void code_neighbours(const BlockGrid& g, size_t j0, size_t n, const int32_t* codes, float* value, float* up,
                       float* down) const override {
    code_neighbours_inline(*this, g, j0, n, codes, value, up, down);
  }

  void encode(const BlockGrid& g, const int32_t* codes, uint8_t* dst) const override {
    const auto d = static_cast<uint16_t>(g.i[0]);
    if (native_) {
      // The block's grid repeated in each of its blocks of 32; Q8_0 holds the signed code u - 128.
      const auto m = static_cast<uint16_t>(g.i[2]);
      int32_t q[32];
      for (size_t k = 0; k < bs_ / 32; ++k) {
        for (size_t j = 0; j < 32; ++j) q[j] = codes[k * 32 + j] - (*native_ == GgmlType::Q8_0 ? offset_ : 0);
        encode_legacy_block(*native_, d, m, q, dst + k * sub_bytes_);
      }
      return;
    }
    std::memcpy(dst, &d, 2);
    if (!spec_.symmetric) dst[2] = static_cast<uint8_t>(g.i[1]);
    std::memset(dst + header_, 0, code_bytes_);
    pack_codes(codes, bs_, spec_.bits, dst + header_);
  }

  void quantize_row(const float* x, uint8_t* dst, size_t n, const float* importance) const override {
    // Same arithmetic as fit/quantize_value/encode, with the per-value work in one tight loop.
    int32_t codes_local[256];
    std::vector<int32_t> codes_heap;
    int32_t* codes = codes_local;
    if (bs_ > 256) {
      codes_heap.resize(bs_);
      codes = codes_heap.data();
    }
    BlockGrid g;
    for (size_t b = 0; b < n / bs_; ++b) {
      const float* xb = x + b * bs_;
      fit(xb, bs_, importance, g);
      const float id = g.f[0];
      if (spec_.symmetric) {
        const float lim = static_cast<float>(half_);
        for (size_t j = 0; j < bs_; ++j)
          codes[j] = static_cast<int32_t>(std::clamp(std::nearbyint(xb[j] * id), -lim, lim)) + offset_;
      } else if (native_) {
        const float m = g.f[2];
        for (size_t j = 0; j < bs_; ++j)
          codes[j] = static_cast<int32_t>(std::clamp(std::nearbyint((xb[j] - m) * id), 0.0f, top()));
      } else {
        const float z = static_cast<float>(g.i[1]);
        for (size_t j = 0; j < bs_; ++j)
          codes[j] = static_cast<int32_t>(std::clamp(std::nearbyint(xb[j] * id) + z, 0.0f, top()));
      }
      encode(g, codes, dst + b * block_bytes());
    }
  }

  void dequantize_row(const uint8_t* src, float* y, size_t n) const override {
    if (native_) return decoder_->dequantize_row(src, y, n);
    for (size_t b = 0; b < n / bs_; ++b) {
      const uint8_t* blk = src + b * block_bytes();
      uint16_t dh;
      std::memcpy(&dh, blk, 2);
      const float d = fp16_to_fp32(dh);
      const int32_t z = spec_.symmetric ? offset_ : blk[2];
      const uint8_t* codes = blk + header_;
      float* yb = y + b * bs_;
      if (spec_.bits == 4) {
        for (size_t j = 0; j < bs_; ++j)
          yb[j] = static_cast<float>(static_cast<int32_t>((codes[j / 2] >> (4 * (j % 2))) & 15) - z) * d;
      } else if (spec_.bits == 8) {
        for (size_t j = 0; j < bs_; ++j) yb[j] = static_cast<float>(static_cast<int32_t>(codes[j]) - z) * d;
      } else {
        for (size_t j = 0; j < bs_; ++j) yb[j] = static_cast<float>(unpack_code(codes, j, spec_.bits) - z) * d;
      }
    }
  }

 private:
  float top() const { return static_cast<float>(maxq_); }

  IntGridSpec spec_;
  std::string name_;
  size_t bs_;
  size_t header_;
  size_t code_bytes_;
  int32_t maxq_;
  int32_t half_;
  int32_t offset_;
  std::optional<GgmlType> native_;  // the llama.cpp type that stores this grid exactly, if any
  FormatPtr decoder_;
  size_t sub_bytes_ = 0;
};

}  // namespace

void read_int_grid_row(const IntGridSpec& spec, size_t row_length, const uint8_t* row, int32_t* codes, uint16_t* d,
                       int32_t* zero) {
  const size_t block = spec.granularity == Granularity::Group ? spec.group : row_length;
  const int32_t offset = 1 << (spec.bits - 1);
  const auto native = native_storage(spec, row_length);
  if (!native) {
    const size_t header = spec.symmetric ? 2 : 3, bytes = header + (block * static_cast<size_t>(spec.bits) + 7) / 8;
    for (size_t b = 0; b < row_length / block; ++b) {
      const uint8_t* blk = row + b * bytes;
      std::memcpy(&d[b], blk, 2);
      zero[b] = spec.symmetric ? offset : blk[2];
      for (size_t j = 0; j < block; ++j) codes[b * block + j] = unpack_code(blk + header, j, spec.bits);
    }
    return;
  }
  // llama.cpp's blocks of 32 (ggml_blocks.hpp), each repeating its grid's d (and min).
  const size_t sub = ggml_type_traits(*native).type_size;
  const bool with_min = *native == GgmlType::Q4_1 || *native == GgmlType::Q5_1;
  const bool five = *native == GgmlType::Q5_0 || *native == GgmlType::Q5_1;
  for (size_t k = 0; k < row_length / 32; ++k) {
    const uint8_t* blk = row + k * sub;
    int32_t* u = codes + k * 32;
    if (*native == GgmlType::Q8_0) {
      for (size_t j = 0; j < 32; ++j) u[j] = static_cast<int8_t>(blk[2 + j]) + 128;
    } else {
      const uint8_t* qs = blk + sub - 16;
      uint32_t qh = 0;
      if (five) std::memcpy(&qh, blk + (with_min ? 4 : 2), 4);
      for (size_t j = 0; j < 16; ++j) {
        u[j] = qs[j] & 15;
        u[j + 16] = qs[j] >> 4;
        if (five) {
          u[j] |= static_cast<int32_t>((qh >> j) & 1u) << 4;
          u[j + 16] |= static_cast<int32_t>((qh >> (j + 16)) & 1u) << 4;
        }
      }
    }
    if ((k * 32) % block != 0) continue;
    const size_t b = k * 32 / block;
    std::memcpy(&d[b], blk, 2);
    if (!with_min) {
      zero[b] = offset;
    } else {
      uint16_t mh;
      std::memcpy(&mh, blk + 2, 2);
      const float df = fp16_to_fp32(d[b]), m = fp16_to_fp32(mh);
      zero[b] = df != 0.0f ? static_cast<int32_t>(std::nearbyint(-m / df)) : 0;
    }
  }
}

FormatPtr make_int_format(const IntGridSpec& spec, size_t row_length) {
  validate_int_spec(spec);
  if (spec.granularity != Granularity::Group && row_length == 0)
    throw std::logic_error("make_int_format: per-row and per-tensor grids need the row length");
  return std::make_shared<IntGridFormat>(spec, row_length);
}

}  // namespace qz
