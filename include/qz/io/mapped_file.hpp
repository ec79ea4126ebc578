// A read-only memory-mapped file: inputs are read zero-copy and never modified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace qz {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps the whole file read-only. Throws InputError naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int slot_ = -1;  // fault_cleanup.hpp
};

// Done with these bytes of a read-only mapping: their pages leave the process's resident set (MADV_DONTNEED; the
// page cache keeps them), so that streaming a model tensor by tensor stays flat in memory whatever its size. A later
// read faults them back in; the bytes are unchanged. The range is widened to whole pages.
void release_mapped_pages(std::span<const uint8_t> bytes) noexcept;

}  // namespace qz
