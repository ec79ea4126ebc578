// An output written to a temporary file beside its destination (`.NAME.tmp.PID.XXXXXX`) and renamed into place only
// on commit(). Stale temporaries of the same output whose process is gone (kill -9) are removed when a new one is
// made; a signal removes the live ones (fault_cleanup.hpp).
// Destroyed without commit() (an exception, a failed write), it removes the temporary file: nothing is left at
// the output path and an existing file there is untouched.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string_view>
#include <span>
#include <vector>

namespace qz {

// True when `a` and `b` are the same existing file (device and inode, so through links and different spellings).
bool same_file(const std::filesystem::path& a, const std::filesystem::path& b);

// Throws UsageError when `output` is the same file as one of `inputs`, whatever --force says: an input is never
// replaced.
void refuse_overwriting_inputs(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs);

// Throws UsageError unless `dest` may be written: not a directory, not something other than a regular file (a
// device such as /dev/full, a pipe, a socket), and not an existing file unless overwrite. Callers check early with it
// (before any input is read); OutputFile checks again when it is made.
void check_output_path(const std::filesystem::path& dest, bool overwrite);

class OutputFile {
 public:
  // Refuses (UsageError) to replace an existing `dest` unless overwrite is true, and always to replace a directory or
  // anything that is not a regular file (a device such as /dev/full, a pipe, a socket).
  OutputFile(std::filesystem::path dest, bool overwrite);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::span<const uint8_t> bytes) { write(bytes.data(), bytes.size()); }
  void write_zeros(size_t n);
  uint64_t position() const { return written_; }
  // Flushes, syncs and renames the temporary file to the destination.
  void commit();

  const std::filesystem::path& temporary() const { return tmp_; }

 private:
  std::filesystem::path dest_;
  std::filesystem::path tmp_;
  std::FILE* file_ = nullptr;
  uint64_t written_ = 0;
  bool committed_ = false;
  int slot_ = -1;  // fault_cleanup.hpp
};

// Writes a small text file (a config.json, an index) through a temporary file.
void write_text_file(const std::filesystem::path& path, std::string_view text, bool overwrite);

}  // namespace qz
