// Raw bytes of trivially copyable values (little-endian hosts, as GGUF and safetensors store them).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace qz {

template <typename T>
std::vector<uint8_t> bytes_of(const T* p, size_t n) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::vector<uint8_t> b(n * sizeof(T));
  if (n) std::memcpy(b.data(), p, b.size());
  return b;
}

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  return bytes_of(v.data(), v.size());
}

}  // namespace qz
