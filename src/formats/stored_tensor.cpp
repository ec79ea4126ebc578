#include "qz/formats/stored_tensor.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <optional>
#include <span>
#include <stdexcept>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"

namespace qz {

std::string custom_format_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".format"; }
std::string custom_shape_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".shape"; }

bool is_layout_key(const std::string& key) {
  return key == "general.alignment" || key == "general.file_type" ||
         key.starts_with("quantize.tensor.") || key.starts_with("quantize.nf4.") || key.starts_with("quantize.fp4.");
}

namespace {

// The format named by a tensor's custom-layout keys, with its logical ne; nullopt for a plain GGUF tensor.
std::optional<StoredTensor> custom_layout(const GgufFile& file, const std::string& name) {
  const GgufValue* fv = file.find(custom_format_key(name));
  if (fv == nullptr) return std::nullopt;
  const std::string where = fmt::format("{}: tensor '{}'", file.path().string(), name);
  const auto* fname = fv->get_if<std::string>();
  const GgufValue* sv = file.find(custom_shape_key(name));
  const auto* arr = sv ? sv->get_if<GgufArray>() : nullptr;
  if (fname == nullptr || arr == nullptr || arr->element_type != GgufType::U64 || arr->items.empty())
    throw InputError(where + ": custom layout metadata (format string, u64 shape array) is missing or malformed");
  StoredTensor s;
  for (const auto& item : arr->items) s.logical_ne.push_back(*item.get_if<uint64_t>());
  s.format = find_format(*fname, s.logical_ne[0]);
  if (!s.format) throw InputError(fmt::format("{}: unknown custom format '{}'", where, *fname));
  return s;
}

}  // namespace

StoredTensor read_stored_tensor(const GgufFile& file, const GgufTensorInfo& t) {
  const std::string where = fmt::format("{}: tensor '{}'", file.path().string(), t.name);
  std::optional<StoredTensor> custom = custom_layout(file, t.name);
  if (!custom) {
    StoredTensor s;
    s.format = format_for_ggml_type(t.type);
    if (!s.format)
      throw InputError(fmt::format("{}: type {} cannot be decoded by this version", where, ggml_type_traits(t.type).name));
    s.logical_ne = t.ne;
    s.parts = {&t};
    return s;
  }
  StoredTensor s = std::move(*custom);
  if (!s.format->whole_tensor() && !s.format->supports_row_length(s.logical_ne[0]))
    throw InputError(fmt::format("{}: format {} cannot store rows of {}", where, s.format->name(), s.logical_ne[0]));
  for (const auto& part : s.format->stored_parts(s.logical_ne)) {
    const GgufTensorInfo* p = part.suffix.empty() ? &t : file.find_tensor(t.name + part.suffix);
    if (p == nullptr) throw InputError(fmt::format("{}: its part '{}' is missing", where, t.name + part.suffix));
    if (p->ne != part.ne || p->type != part.type || p->nbytes != part.bytes)
      throw InputError(fmt::format("{}: stored part '{}' does not match format {} with shape [{}]", where, p->name,
                                   s.format->name(), fmt::join(s.logical_ne, ", ")));
    s.parts.push_back(p);
  }
  return s;
}

bool is_side_part(const GgufFile& file, const GgufTensorInfo& t) {
  // A side part is named <owner><suffix> where <owner> has a custom whole-tensor layout listing that suffix.
  for (size_t dot = t.name.find('.'); dot != std::string::npos; dot = t.name.find('.', dot + 1)) {
    const std::string owner = t.name.substr(0, dot);
    const GgufValue* fv = file.find(custom_format_key(owner));
    if (fv == nullptr) continue;
    const std::optional<StoredTensor> s = custom_layout(file, owner);
    for (const auto& part : s->format->stored_parts(s->logical_ne))
      if (!part.suffix.empty() && owner + part.suffix == t.name) return true;
  }
  return false;
}

std::vector<float> decode_stored_tensor(const GgufFile& file, const GgufTensorInfo& t) {
  const StoredTensor s = read_stored_tensor(file, t);
  uint64_t count = 1;
  for (const uint64_t d : s.logical_ne) count *= d;
  std::vector<std::span<const uint8_t>> parts;
  for (const GgufTensorInfo* p : s.parts) parts.push_back(file.data(*p));
  std::vector<float> out(count);
  try {
    s.format->dequantize_tensor(parts, count, s.logical_ne[0], out.data());
  } catch (const std::invalid_argument& e) {
    throw InputError(fmt::format("{}: tensor '{}': {}", file.path().string(), t.name, e.what()));
  }
  return out;
}

}  // namespace qz
