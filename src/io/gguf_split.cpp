#include "qz/io/gguf_split.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "qz/core/error.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

uint64_t padded(uint64_t n, uint32_t alignment) { return (n + alignment - 1) / alignment * alignment; }

}  // namespace

uint64_t parse_split_size(const std::string& text) {
  uint64_t unit = 1;
  std::string digits = text;
  if (!digits.empty() && std::isalpha(static_cast<unsigned char>(digits.back()))) {
    const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(digits.back())));
    unit = u == 'K' ? 1000ull : u == 'M' ? 1000ull * 1000 : u == 'G' ? 1000ull * 1000 * 1000 : 0;
    digits.pop_back();
  }
  const bool numeric = !digits.empty() && digits.size() <= 12 &&
                       std::all_of(digits.begin(), digits.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  if (unit == 0 || !numeric || std::stoull(digits) == 0)
    throw UsageError(fmt::format("--split-max-size {}: give a positive size such as 4G, 500M or 64K (powers of 1000, as "
                                 "gguf-split), or a number of bytes",
                                 text));
  return std::stoull(digits) * unit;
}

std::vector<fs::path> gguf_split_parts(const fs::path& path) { return GgufFile(path).paths(); }

GgufSplitWriter::GgufSplitWriter(const GgufWriter& layout, const fs::path& output, const GgufSplitLimits& limits,
                                 bool overwrite, const std::vector<fs::path>& inputs) {
  const auto& tensors = layout.tensors();
  // Which part each tensor goes to.
  uint32_t part = 0;
  uint64_t bytes = 0;
  size_t in_part = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = padded(tensors[i].nbytes, kGgufDefaultAlignment);
    const bool full = in_part > 0 && ((limits.max_bytes && bytes + n > limits.max_bytes) ||
                                      (limits.max_tensors && in_part >= limits.max_tensors));
    if (full) {
      ++part;
      bytes = 0;
      in_part = 0;
    }
    bytes += n;
    ++in_part;
    part_of_.push_back(part);
  }
  const uint32_t count = tensors.empty() ? 1 : part + 1;
  if (!limits.any() || count == 1) {
    parts_.push_back(layout);
    paths_.push_back(output);
  } else {
    if (count > 0xFFFF) throw UsageError(fmt::format("the limits give {} parts: GGUF's split.count holds at most 65535", count));
    for (uint32_t i = 0; i < count; ++i) {
      GgufWriter w;
      if (i == 0)
        for (const auto& kv : layout.metadata()) w.set(kv.key, kv.value);
      w.set("split.no", static_cast<uint16_t>(i));
      w.set("split.count", static_cast<uint16_t>(count));
      w.set("split.tensors.count", static_cast<int32_t>(tensors.size()));
      parts_.push_back(std::move(w));
      paths_.push_back(gguf_split_path(output, i, count));
    }
    for (size_t i = 0; i < tensors.size(); ++i) parts_[part_of_[i]].add_tensor(tensors[i].name, tensors[i].ne, tensors[i].type);
  }
  for (const auto& p : paths_) refuse_overwriting_inputs(p, inputs);
  for (size_t i = 0; i < parts_.size(); ++i) {
    files_.push_back(std::make_unique<OutputFile>(paths_[i], overwrite));
    parts_[i].write_header(*files_[i]);
  }
}

void GgufSplitWriter::write_tensor_data(std::span<const uint8_t> bytes) {
  if (next_ >= part_of_.size()) throw std::logic_error("GgufSplitWriter: more tensors written than declared");
  const size_t p = parts_.size() == 1 ? 0 : part_of_[next_];
  parts_[p].write_tensor_data(*files_[p], bytes);
  ++next_;
}

void GgufSplitWriter::commit() {
  for (const auto& w : parts_) w.finish();
  for (const auto& f : files_) f->commit();
}

uint64_t GgufSplitWriter::file_bytes() const {
  uint64_t n = 0;
  for (const auto& w : parts_) n += w.file_bytes();
  return n;
}

}  // namespace qz
