#include "qz/formats/nf4.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <stdexcept>

#include "qz/core/bytes.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/format.hpp"

namespace qz {

namespace {

// Index of the code value nearest to v: the number of midpoints strictly below v (torch.bucketize, right=False).
template <size_t N>
int bucketize(const std::array<float, N - 1>& mid, float v) {
  return static_cast<int>(std::lower_bound(mid.begin(), mid.end(), v) - mid.begin());
}

template <size_t N>
std::array<float, N - 1> midpoints(const std::array<float, N>& code) {
  std::array<float, N - 1> m{};
  for (size_t i = 0; i + 1 < N; ++i) m[i] = (code[i] + code[i + 1]) / 2.0f;
  return m;
}

// FP4's table sorted by value, and for each sorted position the bit pattern bitsandbytes stores.
struct SortedCode {
  std::array<float, 16> value;
  std::array<uint8_t, 16> index;
};
SortedCode sorted(const std::array<float, 16>& code) {
  SortedCode s;
  std::array<uint8_t, 16> order{};
  for (uint8_t i = 0; i < 16; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](uint8_t a, uint8_t b) { return code[a] < code[b]; });
  for (size_t i = 0; i < 16; ++i) {
    s.value[i] = code[order[i]];
    s.index[i] = order[i];
  }
  return s;
}

}  // namespace

const std::array<float, 16>& nf4_code() {
  static const std::array<float, 16> code = {
      -1.0f,
      -0.6961928009986877f,
      -0.5250730514526367f,
      -0.39491748809814453f,
      -0.28444138169288635f,
      -0.18477343022823334f,
      -0.09105003625154495f,
      0.0f,
      0.07958029955625534f,
      0.16093020141124725f,
      0.24611230194568634f,
      0.33791524171829224f,
      0.44070982933044434f,
      0.5626170039176941f,
      0.7229568362236023f,
      1.0f,
  };
  return code;
}

const std::array<float, 16>& fp4_code() {
  static const std::array<float, 16> code = [] {
    const float raw[16] = {0, 0.0625f, 8, 12, 4, 6, 2, 3, -0.0f, -0.0625f, -8, -12, -4, -6, -2, -3};
    std::array<float, 16> c{};
    for (size_t i = 0; i < 16; ++i) c[i] = raw[i] / 12.0f;
    return c;
  }();
  return code;
}

double normal_quantile(double p) {
  if (!(p > 0.0 && p < 1.0)) throw std::invalid_argument("normal_quantile: p must be in (0, 1)");
  // Acklam's rational approximation (relative error 1.15e-9), then two Halley steps on erfc: double precision.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  double x;
  if (p < 0.02425) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p > 1 - 0.02425) {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  for (int i = 0; i < 2; ++i) {
    const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
    const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
    x = x - u / (1 + x * u / 2);
  }
  return x;
}

std::vector<float> torch_linspace(float start, float end, int steps) {
  std::vector<float> v(static_cast<size_t>(steps));
  if (steps == 1) {
    v[0] = start;
    return v;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  // Fused multiply-adds: torch's CPU kernels for AVX2/AVX512 machines are compiled with -mfma and contraction on,
  // so its scalar loop computes start + step * i as one fma (checked against torch's own linspace).
  for (int i = 0; i < steps; ++i)
    v[static_cast<size_t>(i)] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                                            : std::fma(-step, static_cast<float>(steps - i - 1), end);
  return v;
}

std::array<float, 16> construct_nf4_code(float offset) {
  std::vector<float> v;
  const auto pos = torch_linspace(offset, 0.5f, 9), neg = torch_linspace(offset, 0.5f, 8);
  for (int i = 0; i < 8; ++i) v.push_back(static_cast<float>(normal_quantile(pos[static_cast<size_t>(i)])));
  for (int i = 0; i < 7; ++i) v.push_back(static_cast<float>(-normal_quantile(neg[static_cast<size_t>(i)])));
  v.push_back(0.0f);
  std::sort(v.begin(), v.end());
  const float max = v.back();
  std::array<float, 16> code{};
  for (size_t i = 0; i < 16; ++i) code[i] = v[i] / max;
  return code;
}

const std::array<float, 256>& dynamic_map() {
  static const std::array<float, 256> map = [] {
    std::vector<float> data;
    for (int i = 0; i < 7; ++i) {
      const auto bounds = torch_linspace(0.1f, 1.0f, (1 << i) + 1);
      const auto scale = static_cast<float>(std::pow(10.0, -6 + i));
      for (size_t j = 0; j + 1 < bounds.size(); ++j) data.push_back(scale * ((bounds[j] + bounds[j + 1]) / 2.0f));
      for (size_t j = 0; j + 1 < bounds.size(); ++j) data.push_back(-scale * ((bounds[j] + bounds[j + 1]) / 2.0f));
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    std::array<float, 256> m{};
    std::copy(data.begin(), data.end(), m.begin());
    return m;
  }();
  return map;
}

std::string Nf4Options::name() const {
  return fmt::format("{}_b{}{}", fp4 ? "fp4" : "nf4", blocksize, double_quant ? "_dq" : "");
}

void validate_nf4_options(const Nf4Options& o) {
  if (o.blocksize < 32 || o.blocksize > 4096 || (o.blocksize & (o.blocksize - 1)) != 0)
    throw UsageError(fmt::format("--group-size {}: NF4 block sizes are powers of two from 32 to 4096", o.blocksize));
}

namespace {

template <typename T>
std::vector<T> values_of(std::span<const uint8_t> b, size_t n, const char* what) {
  if (b.size() != n * sizeof(T)) throw std::invalid_argument(fmt::format("NF4 {}: {} bytes, expected {}", what, b.size(), n * sizeof(T)));
  std::vector<T> v(n);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// A whole-tensor format: parts = packed codes [ceil(n/2)] I8, then absmax [blocks] (F32), or with double
// quantization qabsmax [blocks] I8, nested_absmax [ceil(blocks/256)] F32, nested_offset [1] F32.
class Nf4Format final : public Format {
 public:
  explicit Nf4Format(const Nf4Options& o) : o_(o), name_(o.name()) {}
  const std::string& name() const override { return name_; }
  GgmlType storage_type() const override { return GgmlType::I8; }
  bool llama_native() const override { return false; }
  size_t block_size() const override { return 1; }
  size_t block_bytes() const override { return 1; }
  double bits_per_weight() const override {
    return 4.0 + (o_.double_quant ? 8.0 / static_cast<double>(o_.blocksize) +
                                        32.0 / static_cast<double>(o_.blocksize * Nf4Options::kNestedBlock)
                                  : 32.0 / static_cast<double>(o_.blocksize));
  }
  bool whole_tensor() const override { return true; }

  std::vector<StoredPart> stored_parts(const std::vector<uint64_t>& ne) const override {
    uint64_t n = 1;
    for (const uint64_t d : ne) n *= d;
    const uint64_t blocks = nf4_blocks(n, o_), nested = (blocks + Nf4Options::kNestedBlock - 1) / Nf4Options::kNestedBlock;
    std::vector<StoredPart> p = {{"", {(n + 1) / 2}, GgmlType::I8, (n + 1) / 2}};
    if (o_.double_quant) {
      p.push_back({".absmax", {blocks}, GgmlType::I8, blocks});
      p.push_back({".nested_absmax", {nested}, GgmlType::F32, 4 * nested});
      p.push_back({".nested_offset", {1}, GgmlType::F32, 4});
    } else {
      p.push_back({".absmax", {blocks}, GgmlType::F32, 4 * blocks});
    }
    return p;
  }

  std::vector<std::vector<uint8_t>> quantize_tensor(const float* x, size_t count) const override {
    Nf4Tensor q = quantize_nf4(x, count, o_);
    if (o_.double_quant)
      return {std::move(q.packed), std::move(q.qabsmax), bytes_of(q.nested_absmax), bytes_of(std::vector<float>{q.nested_offset})};
    return {std::move(q.packed), bytes_of(q.absmax)};
  }

  void dequantize_tensor(const std::vector<std::span<const uint8_t>>& parts, size_t count, size_t,
                         float* y) const override {
    if (parts.size() != (o_.double_quant ? 4u : 2u)) throw std::invalid_argument("NF4: wrong number of stored parts");
    Nf4Tensor q;
    q.count = count;
    q.packed = values_of<uint8_t>(parts[0], (count + 1) / 2, "packed codes");
    const size_t blocks = nf4_blocks(count, o_);
    if (o_.double_quant) {
      q.qabsmax = values_of<uint8_t>(parts[1], blocks, "quantized absmax");
      q.nested_absmax = values_of<float>(parts[2], (blocks + Nf4Options::kNestedBlock - 1) / Nf4Options::kNestedBlock, "nested absmax");
      q.nested_offset = values_of<float>(parts[3], 1, "nested offset")[0];
    } else {
      q.absmax = values_of<float>(parts[1], blocks, "absmax");
    }
    dequantize_nf4(q, o_, y);
  }

  [[noreturn]] static void rows_unsupported() {
    throw std::logic_error("NF4/FP4 blocks run across rows: it is a whole-tensor format (quantize_tensor)");
  }
  void quantize_row(const float*, uint8_t*, size_t, const float*) const override { rows_unsupported(); }
  void dequantize_row(const uint8_t*, float*, size_t) const override { rows_unsupported(); }
  void fit(const float*, size_t, const float*, BlockGrid&) const override { rows_unsupported(); }
  int32_t quantize_value(const BlockGrid&, size_t, float) const override { rows_unsupported(); }
  float dequantize_value(const BlockGrid&, size_t, int32_t) const override { rows_unsupported(); }
  void encode(const BlockGrid&, const int32_t*, uint8_t*) const override { rows_unsupported(); }

 private:
  Nf4Options o_;
  std::string name_;
};
}  // namespace

FormatPtr make_nf4_format(const Nf4Options& o) { return std::make_shared<Nf4Format>(o); }

bool parse_nf4_name(const std::string& name, Nf4Options* o) {
  Nf4Options r;
  std::string s = name;
  if (s.starts_with("nf4_b")) r.fp4 = false;
  else if (s.starts_with("fp4_b")) r.fp4 = true;
  else return false;
  s = s.substr(5);
  r.double_quant = s.ends_with("_dq");
  if (r.double_quant) s.resize(s.size() - 3);
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 5) return false;
  r.blocksize = std::stoul(s);
  if (r.blocksize < 32 || r.blocksize > 4096 || (r.blocksize & (r.blocksize - 1)) != 0) return false;
  *o = r;
  return true;
}

size_t nf4_blocks(size_t count, const Nf4Options& o) { return (count + o.blocksize - 1) / o.blocksize; }

double nf4_bits_per_weight(size_t count, const Nf4Options& o) {
  const size_t blocks = nf4_blocks(count, o);
  double bits = 4.0 * static_cast<double>(count);
  if (o.double_quant) bits += 8.0 * static_cast<double>(blocks) + 32.0 * static_cast<double>((blocks + 255) / 256);
  else bits += 32.0 * static_cast<double>(blocks);
  return bits / static_cast<double>(count);
}

Nf4Tensor quantize_nf4(const float* x, size_t count, const Nf4Options& o) {
  validate_nf4_options(o);
  const SortedCode code = sorted(o.fp4 ? fp4_code() : nf4_code());
  const auto mid = midpoints<16>(code.value);
  const int zero_code = static_cast<int>(std::find(code.value.begin(), code.value.end(), 0.0f) - code.value.begin());
  Nf4Tensor t;
  t.count = count;
  const size_t blocks = nf4_blocks(count, o);
  t.absmax.resize(blocks);
  t.packed.assign((count + 1) / 2, 0);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t i0 = b * o.blocksize, i1 = std::min(count, i0 + o.blocksize);
    float amax = 0.0f;
    for (size_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(x[i]));
    t.absmax[b] = amax;
    for (size_t i = i0; i < i1; ++i) {
      int q = zero_code;  // an all-zero block stores the zero code
      if (amax > 0.0f) q = bucketize<16>(mid, std::clamp(x[i] / amax, -1.0f, 1.0f));
      const uint8_t stored = code.index[static_cast<size_t>(q)];
      t.packed[i / 2] = static_cast<uint8_t>(t.packed[i / 2] | (i % 2 == 0 ? stored << 4 : stored));
    }
  }
  if (o.double_quant) {
    double sum = 0.0;
    for (float a : t.absmax) sum += a;
    t.nested_offset = static_cast<float>(sum / static_cast<double>(blocks));
    const auto& map = dynamic_map();
    const auto mid2 = midpoints<256>(map);
    const size_t nested = (blocks + Nf4Options::kNestedBlock - 1) / Nf4Options::kNestedBlock;
    t.nested_absmax.resize(nested);
    t.qabsmax.resize(blocks);
    for (size_t g = 0; g < nested; ++g) {
      const size_t b0 = g * Nf4Options::kNestedBlock, b1 = std::min(blocks, b0 + Nf4Options::kNestedBlock);
      float amax = 0.0f;
      for (size_t b = b0; b < b1; ++b) amax = std::max(amax, std::fabs(t.absmax[b] - t.nested_offset));
      t.nested_absmax[g] = amax;
      for (size_t b = b0; b < b1; ++b) {
        const float v = amax > 0.0f ? std::clamp((t.absmax[b] - t.nested_offset) / amax, -1.0f, 1.0f) : 0.0f;
        t.qabsmax[b] = static_cast<uint8_t>(bucketize<256>(mid2, v));
      }
    }
    t.absmax.clear();
  }
  return t;
}

std::vector<float> nf4_absmax(const Nf4Tensor& t, const Nf4Options& o) {
  if (!o.double_quant) return t.absmax;
  const auto& map = dynamic_map();
  std::vector<float> a(t.qabsmax.size());
  for (size_t b = 0; b < a.size(); ++b)
    a[b] = map[t.qabsmax[b]] * t.nested_absmax[b / Nf4Options::kNestedBlock] + t.nested_offset;
  return a;
}

void dequantize_nf4(const Nf4Tensor& t, const Nf4Options& o, float* y) {
  const auto& code = o.fp4 ? fp4_code() : nf4_code();
  const std::vector<float> absmax = nf4_absmax(t, o);
  for (size_t i = 0; i < t.count; ++i) {
    const uint8_t byte = t.packed[i / 2];
    const int q = i % 2 == 0 ? byte >> 4 : byte & 15;
    y[i] = code[static_cast<size_t>(q)] * absmax[i / o.blocksize];
  }
}

}  // namespace qz
