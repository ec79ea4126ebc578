#include "qz/io/gguf_tensor_file.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <regex>

#include "qz/core/error.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

std::optional<DType> plain_dtype(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return DType::F32;
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    case GgmlType::F64: return DType::F64;
    case GgmlType::I8: return DType::I8;
    case GgmlType::I16: return DType::I16;
    case GgmlType::I32: return DType::I32;
    case GgmlType::I64: return DType::I64;
    default: return std::nullopt;
  }
}

uint32_t split_key(const GgufFile& g, const char* key) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return 0;
  if (const auto* u16 = v->get_if<uint16_t>()) return *u16;
  if (const auto* u32 = v->get_if<uint32_t>()) return *u32;
  if (const auto* i32 = v->get_if<int32_t>()) return *i32 > 0 ? static_cast<uint32_t>(*i32) : 0;
  return 0;
}

}  // namespace

GgufTensorFile::GgufTensorFile(const fs::path& path) : gguf_(path) {
  tensors_.reserve(gguf_.tensors().size());
  for (const auto& t : gguf_.tensors()) {
    SafetensorsTensor s;
    s.name = t.name;
    s.shape.assign(t.ne.rbegin(), t.ne.rend());
    s.begin = t.offset;
    s.end = t.offset + t.nbytes;
    if (const auto d = plain_dtype(t.type)) {
      s.dtype = *d;
    } else {
      s.dtype = DType::U8;
      s.ggml_type = t.type;
    }
    tensors_.push_back(std::move(s));
  }
}

std::span<const uint8_t> GgufTensorFile::data(const SafetensorsTensor& t) const {
  const size_t i = static_cast<size_t>(&t - tensors_.data());
  if (i >= tensors_.size()) throw std::logic_error("GgufTensorFile::data: a tensor of another file");
  return gguf_.data(gguf_.tensors()[i]);
}

bool is_gguf_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

std::vector<fs::path> gguf_split_parts(const fs::path& path) {
  const GgufFile first(path);
  const uint32_t count = split_key(first, "split.count");
  if (count <= 1) return {path};
  static const std::regex pattern(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  std::smatch m;
  const std::string name = path.filename().string();
  if (!std::regex_match(name, m, pattern) || std::stoul(m[3].str()) != count)
    throw InputError(fmt::format("{}: split.count is {}, but the file name is not PREFIX-NNNNN-of-{:05d}.gguf, so its "
                                 "other parts cannot be found",
                                 path.string(), count, count));
  std::vector<fs::path> parts;
  for (uint32_t i = 1; i <= count; ++i) {
    const fs::path part = path.parent_path() / fmt::format("{}-{:05d}-of-{:05d}.gguf", m[1].str(), i, count);
    std::error_code ec;
    if (!fs::exists(part, ec))
      throw InputError(fmt::format("{}: part {} of {} of this split GGUF is missing ({})", path.string(), i, count,
                                   part.string()));
    const GgufFile g(part);
    if (split_key(g, "split.no") != i - 1 || split_key(g, "split.count") != count)
      throw InputError(fmt::format("{}: split.no / split.count say part {} of {}, not part {} of {}", part.string(),
                                   split_key(g, "split.no") + 1, split_key(g, "split.count"), i, count));
    parts.push_back(part);
  }
  return parts;
}

}  // namespace qz
