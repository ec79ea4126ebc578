// Shared by the libFuzzer targets (tests/fuzz/README.md): each parser reads files, so an input is written to a file
// of the name the parser expects, in a directory of this process. A parser's own errors (InputError, UsageError)
// are the right answer to bad input; anything else escaping (std::bad_alloc, std::out_of_range, a JSON type error
// without the file's name, ...) aborts, and libFuzzer keeps the input as a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "qz/core/error.hpp"

namespace qz::fuzz {

inline const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("qz_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::filesystem::path input_file(const uint8_t* data, size_t size, const std::string& name) {
  const auto p = work_dir() / name;
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p;
}

template <typename F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const InputError&) {
  } catch (const UsageError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "uncaught %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

}  // namespace qz::fuzz
