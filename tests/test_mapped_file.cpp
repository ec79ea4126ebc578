// MappedFile: read-only mapping of an input, and releasing the pages of bytes read (streaming stays flat in memory).
#include "qz/io/mapped_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "qz/core/error.hpp"
#include "test_util.hpp"

namespace qz {
namespace {

// Resident pages of this process that map files (statm's "shared" field), in bytes.
size_t resident_file_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t size = 0, resident = 0, shared = 0;
  f >> size >> resident >> shared;
  return shared * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

TEST(MappedFile, ReleasedPagesLeaveTheResidentSetAndReadBackUnchanged) {
  test::TempDir dir;
  const size_t n = 64u << 20;
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 24);
  test::write_bytes(dir / "f", bytes);
  const MappedFile m(dir / "f");
  ASSERT_EQ(m.size(), n);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i += 4096) sum += m.bytes()[i];  // touch every page
  const size_t touched = resident_file_bytes();
  release_mapped_pages(m.bytes().subspan(1, n - 2));  // widened to whole pages
  const size_t released = resident_file_bytes();
  EXPECT_LT(released + n / 2, touched) << "touched " << touched << " then " << released;
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), m.bytes().begin()));  // read back from the page cache
  EXPECT_GT(sum, 0u);
  release_mapped_pages({});  // nothing to do
}

TEST(MappedFile, MissingFilesAndDirectoriesAreErrorsNamingThem) {
  test::TempDir dir;
  test::expect_error<InputError>([&] { MappedFile m(dir / "none"); }, {"none"});
  test::expect_error<InputError>([&] { MappedFile m(dir.path()); }, {"not a regular file"});
}

}  // namespace
}  // namespace qz
