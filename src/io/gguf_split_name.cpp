#include "qz/io/gguf_split_name.hpp"

#include <fmt/format.h>

#include <regex>

namespace qz {

namespace fs = std::filesystem;

fs::path gguf_split_path(const fs::path& output, uint32_t i, uint32_t n) {
  fs::path prefix = output;
  if (prefix.extension() == ".gguf") prefix.replace_extension();
  return fs::path(fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix.string(), i + 1, n));
}

std::optional<GgufSplitName> parse_gguf_split_name(const fs::path& path) {
  static const std::regex pattern(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  const std::string name = path.filename().string();
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return GgufSplitName{path.parent_path() / m[1].str(), static_cast<uint32_t>(std::stoul(m[2].str())),
                       static_cast<uint32_t>(std::stoul(m[3].str()))};
}

}  // namespace qz
