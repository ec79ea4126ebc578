// The file names of a split GGUF, as llama.cpp's gguf-split gives them: PREFIX-00001-of-00003.gguf for part 1 of 3.
// The writer (io/gguf_split.hpp) names its parts with it; the reader (GgufFile, io/gguf.hpp) finds a set's other
// parts from the first part's name. Names only: no file is opened here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace qz {

// PREFIX-00001-of-00003.gguf for part i (from 0) of n; PREFIX is `output` without its .gguf extension.
std::filesystem::path gguf_split_path(const std::filesystem::path& output, uint32_t i, uint32_t n);

// A file name of that form, taken apart: its prefix (directory kept), part number (from 1) and part count.
struct GgufSplitName {
  std::filesystem::path prefix;
  uint32_t part = 0;   // 1-based, as in the name
  uint32_t count = 0;
};
std::optional<GgufSplitName> parse_gguf_split_name(const std::filesystem::path& path);

}  // namespace qz
