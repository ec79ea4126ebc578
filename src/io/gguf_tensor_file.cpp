#include "qz/io/gguf_tensor_file.hpp"

#include <fmt/format.h>

#include <fstream>

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

}  // namespace qz
