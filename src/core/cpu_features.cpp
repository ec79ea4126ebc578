#include "qz/core/cpu_features.hpp"

#include <cstdlib>
#include <cstring>

namespace qz {

namespace {

bool baseline_forced() {
  const char* v = std::getenv("QZ_BASELINE_ISA");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

bool supports(bool avx2, bool f16c) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (baseline_forced()) return false;
#if defined(__clang__)
  // clang 14 knows no "f16c" feature name here, and its builds convert to fp16 in software (legacy_quants.cpp).
  (void)f16c;
  return !avx2 || __builtin_cpu_supports("avx2");
#else
  return (!avx2 || __builtin_cpu_supports("avx2")) && (!f16c || __builtin_cpu_supports("f16c"));
#endif
#else
  (void)avx2;
  (void)f16c;
  return false;
#endif
}

}  // namespace

bool cpu_has_avx2() {
  static const bool has = supports(true, false);
  return has;
}

bool cpu_has_avx2_f16c() {
  static const bool has = supports(true, true);
  return has;
}

}  // namespace qz
