// GGUF bytes written by hand (independently of GgufWriter), to build valid and malformed files in tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qz::test {

struct RawGguf {
  std::vector<uint8_t> b;
  template <typename T>
  RawGguf& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  RawGguf& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  RawGguf& header(uint32_t version, int64_t n_tensors, int64_t n_kv) {
    b = {'G', 'G', 'U', 'F'};
    return put(version).put(n_tensors).put(n_kv);
  }
  RawGguf& tensor(const std::string& name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (auto n : ne) put(n);
    return put(type).put(offset);
  }
  RawGguf& pad(size_t align = 32) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  RawGguf& data(size_t n) {
    b.resize(b.size() + n, 0x7);
    return *this;
  }
};

}  // namespace qz::test
