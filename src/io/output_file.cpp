#include "qz/io/output_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "qz/core/error.hpp"
#include "qz/io/fault_cleanup.hpp"

namespace qz {

namespace fs = std::filesystem;

bool same_file(const fs::path& a, const fs::path& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void refuse_overwriting_inputs(const fs::path& output, const std::vector<fs::path>& inputs) {
  for (const auto& in : inputs)
    if (same_file(output, in))
      throw UsageError(fmt::format("{}: the output is the input {}: refusing to replace an input (--force or not); "
                                   "choose another -o",
                                   output.string(), in.string()));
}

void check_output_path(const fs::path& dest, bool overwrite) {
  std::error_code ec;
  if (fs::is_directory(dest, ec))
    throw UsageError(dest.string() + ": the output path is a directory: give a file name (-o DIR/NAME.gguf)");
  const fs::file_status st = fs::status(dest, ec);
  if (fs::exists(st) && !fs::is_regular_file(st))
    throw UsageError(dest.string() + ": the output path exists and is not a regular file (a device, pipe or socket): "
                                     "refusing to replace it");
  if (fs::exists(st) && !overwrite) throw UsageError(dest.string() + ": output exists; pass --force to overwrite it");
}

OutputFile::OutputFile(fs::path dest, bool overwrite) : dest_(std::move(dest)) {
  check_output_path(dest_, overwrite);
  std::error_code ec;
  const fs::path dir = dest_.has_parent_path() ? dest_.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec)) throw UsageError(dest_.string() + ": output directory does not exist");
  // Stale temporaries of this output from runs that were killed: their process is gone.
  std::string stem = ".";  // (built by appends: GCC 12 warns falsely on operator+ here, -Wrestrict)
  stem += dest_.filename().string();
  stem += ".tmp.";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (!n.starts_with(stem)) continue;
    const long pid = std::strtol(n.c_str() + stem.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(e.path(), ec);
  }
  // The name is registered for the signal handlers before the file exists, so a signal at any moment finds it
  // (a name made by mkstemp would exist, unregistered, between the two calls).
  const std::string prefix = (dir / (stem + std::to_string(::getpid()) + ".")).string();
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    std::string name = prefix;
    for (int i = 0; i < 6; ++i) name += kChars[rd() % (sizeof(kChars) - 1)];
    unregister_temporary(slot_);
    slot_ = register_temporary(name.c_str());
    fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) tmp_ = name;
    else if (errno != EEXIST) break;
  }
  if (fd < 0) {
    const int err = errno;
    unregister_temporary(slot_);
    slot_ = -1;
    throw std::runtime_error(dest_.string() + ": cannot create temporary file: " + std::strerror(err));
  }
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    ::close(fd);
    fs::remove(tmp_, ec);
    throw std::runtime_error(dest_.string() + ": cannot open temporary file");
  }
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
}

OutputFile::~OutputFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_ && !tmp_.empty()) {
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
  unregister_temporary(slot_);  // after the removal: a signal in between still finds the name
}

void OutputFile::write(const void* data, size_t n) {
  if (n == 0) return;
  if (std::fwrite(data, 1, n, file_) != n)
    throw std::runtime_error(dest_.string() + ": write failed: " + std::strerror(errno));
  written_ += n;
}

void OutputFile::write_zeros(size_t n) {
  static const uint8_t zeros[256] = {};
  while (n > 0) {
    const size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
    write(zeros, k);
    n -= k;
  }
}

void OutputFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0)
    throw std::runtime_error(dest_.string() + ": flush failed: " + std::strerror(errno));
  if (std::fclose(file_) != 0) {
    file_ = nullptr;
    throw std::runtime_error(dest_.string() + ": close failed: " + std::strerror(errno));
  }
  file_ = nullptr;
  std::error_code ec;
  fs::rename(tmp_, dest_, ec);
  if (ec) throw std::runtime_error(dest_.string() + ": cannot rename temporary file into place: " + ec.message());
  committed_ = true;
  unregister_temporary(slot_);
  slot_ = -1;
}

void write_text_file(const fs::path& path, std::string_view text, bool overwrite) {
  OutputFile f(path, overwrite);
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace qz
