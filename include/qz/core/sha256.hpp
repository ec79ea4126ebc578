// SHA-256 (FIPS 180-4) of bytes or of a file, as lowercase hex: the batch manifest records each output's digest.
// Written here because none of the project's libraries offers it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace qz {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> bytes);
  std::string hex_digest();  // finishes the hash

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t used_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(std::span<const uint8_t> bytes);
// Reads the file in chunks; throws InputError naming it when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace qz
