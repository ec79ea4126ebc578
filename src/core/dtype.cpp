#include "qz/core/dtype.hpp"

#include <cstring>
#include <stdexcept>

#include "qz/core/cpu_features.hpp"
#include "qz/core/half.hpp"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define QZ_HAVE_F16C 1
#endif

namespace qz {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F64, "F64", 8},
    {DType::I8, "I8", 1},   {DType::U8, "U8", 1},   {DType::I16, "I16", 2},   {DType::I32, "I32", 4},
    {DType::I64, "I64", 8}, {DType::BOOL, "BOOL", 1},
};

template <typename T>
void convert_plain(const void* src, float* dst, size_t n) {
  const auto* p = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

void f16_to_f32_table(const unsigned char* p, float* dst, size_t n) {
  const float* table = fp16_table();
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = table[h];
  }
}

#ifdef QZ_HAVE_F16C
// fp16 -> float by the F16C instruction, 8 values at a time (exact, the same floats as the table).
[[gnu::target("avx2,f16c")]] void f16_to_f32_f16c(const unsigned char* p, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i))));
  f16_to_f32_table(p + 2 * i, dst + i, n - i);
}
#endif
}  // namespace

size_t dtype_size(DType t) {
  for (const auto& d : kTypes)
    if (d.type == t) return d.size;
  return 0;
}

std::string_view dtype_name(DType t) {
  for (const auto& d : kTypes)
    if (d.type == t) return d.name;
  return "?";
}

std::optional<DType> parse_dtype(std::string_view s) {
  for (const auto& d : kTypes)
    if (d.name == s) return d.type;
  return std::nullopt;
}

bool dtype_is_numeric_input(DType t) {
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::F64:
    case DType::I8:
    case DType::U8:
      return true;
    default:
      return false;
  }
}

void convert_to_f32(const void* src, DType t, float* dst, size_t n) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::F16: {
      const auto* p = static_cast<const unsigned char*>(src);
#ifdef QZ_HAVE_F16C
      if (cpu_has_avx2_f16c()) return f16_to_f32_f16c(p, dst, n);
#endif
      return f16_to_f32_table(p, dst, n);
    }
    case DType::BF16: {
      const auto* p = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_fp32(h);
      }
      return;
    }
    case DType::F64:
      return convert_plain<double>(src, dst, n);
    case DType::I8:
      return convert_plain<int8_t>(src, dst, n);
    case DType::U8:
      return convert_plain<uint8_t>(src, dst, n);
    case DType::I16:
      return convert_plain<int16_t>(src, dst, n);
    case DType::I32:
      return convert_plain<int32_t>(src, dst, n);
    case DType::I64:
      return convert_plain<int64_t>(src, dst, n);
    case DType::BOOL:
      return convert_plain<uint8_t>(src, dst, n);
  }
  throw std::logic_error("convert_to_f32: unknown dtype");
}

}  // namespace qz
