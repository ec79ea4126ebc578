#include "qz/pipeline/dequantize.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <optional>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/pipeline/plan.hpp"

namespace qz {

namespace {

// The NF4/FP4 options of a stored weight, if it is one.
std::optional<Nf4Options> nf4_of(const GgufFile& file, const std::string& tensor) {
  const GgufValue* fv = file.find(custom_format_key(tensor));
  const auto* name = fv ? fv->get_if<std::string>() : nullptr;
  Nf4Options o;
  if (name == nullptr || !parse_nf4_name(*name, &o)) return std::nullopt;
  return o;
}

// True for the absmax / nested tensors that belong to an NF4/FP4 weight (decoded with it, not on their own).
bool is_nf4_companion(const GgufFile& file, const std::string& name) {
  for (const std::string suffix : {".absmax", ".nested_absmax", ".nested_offset"})
    if (name.ends_with(suffix) && nf4_of(file, name.substr(0, name.size() - suffix.size()))) return true;
  return false;
}

std::vector<float> decode_nf4(const GgufFile& file, const GgufTensorInfo& t, const Nf4Options& o, size_t count) {
  const std::string where = fmt::format("{}: tensor '{}'", file.path().string(), t.name);
  Nf4Tensor q;
  q.count = count;
  const auto packed = file.data(t);
  if (packed.size() != (count + 1) / 2) throw InputError(where + ": packed codes do not match the shape");
  q.packed.assign(packed.begin(), packed.end());
  const auto names = nf4_companions(t.name, o);
  auto companion = [&](size_t i) {
    const GgufTensorInfo* c = file.find_tensor(names[i]);
    if (c == nullptr) throw InputError(fmt::format("{}: '{}' is missing", where, names[i]));
    return file.data(*c);
  };
  const size_t blocks = nf4_blocks(count, o);
  auto floats = [&](std::span<const uint8_t> b, size_t n) {
    if (b.size() != 4 * n) throw InputError(where + ": NF4 side tensor of the wrong size");
    std::vector<float> v(n);
    std::memcpy(v.data(), b.data(), b.size());
    return v;
  };
  if (o.double_quant) {
    const auto qa = companion(0);
    if (qa.size() != blocks) throw InputError(where + ": quantized absmax of the wrong size");
    q.qabsmax.assign(qa.begin(), qa.end());
    q.nested_absmax = floats(companion(1), (blocks + 255) / 256);
    q.nested_offset = floats(companion(2), 1)[0];
  } else {
    q.absmax = floats(companion(0), blocks);
  }
  std::vector<float> y(count);
  dequantize_nf4(q, o, y.data());
  return y;
}

}  // namespace

StoredFormat stored_format(const GgufFile& file, const GgufTensorInfo& t) {
  const std::string where = fmt::format("{}: tensor '{}'", file.path().string(), t.name);
  StoredFormat s;
  if (const GgufValue* fv = file.find(custom_format_key(t.name))) {
    const auto* name = fv->get_if<std::string>();
    const GgufValue* sv = file.find(custom_shape_key(t.name));
    const auto* arr = sv ? sv->get_if<GgufArray>() : nullptr;
    Nf4Options nf4;
    const bool is_nf4 = name != nullptr && parse_nf4_name(*name, &nf4);
    if (name == nullptr || arr == nullptr || arr->element_type != GgufType::U64 || arr->items.empty() ||
        (!is_nf4 && arr->items.size() != t.ne.size()))
      throw InputError(where + ": custom layout metadata (format string, u64 shape array) is missing or malformed");
    for (const auto& item : arr->items) s.logical_ne.push_back(*item.get_if<uint64_t>());
    if (is_nf4) {
      s.format = make_nf4_format(nf4);
      return s;
    }
    s.format = find_format(*name, s.logical_ne[0]);
    if (!s.format) throw InputError(fmt::format("{}: unknown custom format '{}'", where, *name));
    if (!s.format->supports_row_length(s.logical_ne[0]) || s.format->row_bytes(s.logical_ne[0]) != t.ne[0])
      throw InputError(fmt::format("{}: format {} with row length {} does not match the stored {} bytes per row",
                                   where, *name, s.logical_ne[0], t.ne[0]));
    for (size_t i = 1; i < t.ne.size(); ++i)
      if (s.logical_ne[i] != t.ne[i]) throw InputError(where + ": custom layout shape does not match the tensor");
    return s;
  }
  s.format = format_for_ggml_type(t.type);
  if (!s.format)
    throw InputError(fmt::format("{}: type {} cannot be decoded by this version", where,
                                 ggml_type_traits(t.type).name));
  s.logical_ne = t.ne;
  return s;
}

std::vector<float> dequantize_tensor(const GgufFile& file, const GgufTensorInfo& t) {
  const StoredFormat s = stored_format(file, t);
  const size_t cols = s.logical_ne[0];
  size_t rows = 1;
  for (size_t i = 1; i < s.logical_ne.size(); ++i) rows *= s.logical_ne[i];
  if (const auto o = nf4_of(file, t.name)) return decode_nf4(file, t, *o, rows * cols);
  std::vector<float> out(rows * cols);
  const auto data = file.data(t);
  const size_t rb = s.format->row_bytes(cols);
  for (size_t r = 0; r < rows; ++r) s.format->dequantize_row(data.data() + r * rb, out.data() + r * cols, cols);
  return out;
}

size_t dequantize_gguf(const std::filesystem::path& input, const std::filesystem::path& output, DType dtype,
                       bool overwrite) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw UsageError("--dtype must be f32, f16 or bf16");
  const GgufFile file(input);
  std::vector<SafetensorsWriter::Decl> decls;
  std::vector<const GgufTensorInfo*> weights;
  for (const auto& t : file.tensors()) {
    if (is_nf4_companion(file, t.name)) continue;
    const StoredFormat s = stored_format(file, t);
    decls.push_back({t.name, dtype, std::vector<uint64_t>(s.logical_ne.rbegin(), s.logical_ne.rend())});
    weights.push_back(&t);
  }
  OutputFile out(output, overwrite);
  SafetensorsWriter writer(out, decls, {{"format", "pt"}, {"source", input.filename().string()}});
  std::vector<uint8_t> bytes;
  for (const GgufTensorInfo* tp : weights) {
    const std::vector<float> v = dequantize_tensor(file, *tp);
    bytes.resize(v.size() * dtype_size(dtype));
    for (size_t i = 0; i < v.size(); ++i) {
      if (dtype == DType::F32) {
        std::memcpy(bytes.data() + 4 * i, &v[i], 4);
      } else {
        const uint16_t h = dtype == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    writer.write_next(bytes);
  }
  writer.finish();
  out.commit();
  return decls.size();
}

size_t dequantize_gguf_to_gguf(const std::filesystem::path& input, const std::filesystem::path& output,
                               bool overwrite) {
  const GgufFile file(input);
  GgufWriter w(file.alignment());
  for (const auto& kv : file.metadata()) {
    if (kv.key == "general.alignment" || kv.key.starts_with("quantize.tensor.") || kv.key.starts_with("quantize.nf4.") ||
        kv.key.starts_with("quantize.fp4."))
      continue;
    if (kv.key == "general.file_type") {
      w.set(kv.key, uint32_t{0});
      continue;
    }
    if (kv.key == "general.quantization_version") continue;
    w.set(kv.key, kv.value);
  }
  std::vector<const GgufTensorInfo*> weights;
  for (const auto& t : file.tensors()) {
    if (is_nf4_companion(file, t.name)) continue;
    w.add_tensor(t.name, stored_format(file, t).logical_ne, GgmlType::F32);
    weights.push_back(&t);
  }
  OutputFile out(output, overwrite);
  w.write_header(out);
  for (const GgufTensorInfo* tp : weights) {
    const std::vector<float> v = dequantize_tensor(file, *tp);
    w.write_tensor_data(out, {reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4});
  }
  w.finish();
  out.commit();
  return weights.size();
}

std::string describe_gguf(const GgufFile& file) {
  std::string s = fmt::format("{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}\n",
                              file.path().string(), file.version(), file.metadata().size(), file.tensors().size(),
                              file.alignment(), file.data_offset());
  s += "\nmetadata:\n";
  for (const auto& kv : file.metadata())
    s += fmt::format("  {:<48} {:<7} {}\n", kv.key, gguf_type_name(kv.value.type()), kv.value.to_string());
  s += fmt::format("\n{:<48} {:<22} {:<18} {:>12} {:>12}\n", "tensor", "shape (ne)", "type", "bytes", "offset");
  for (const auto& t : file.tensors()) {
    const std::string shape = fmt::format("{}", fmt::join(t.ne, " x "));
    std::string type(ggml_type_traits(t.type).name);
    if (const GgufValue* fv = file.find(custom_format_key(t.name)))
      if (const auto* n = fv->get_if<std::string>()) type = *n + " (as " + type + ")";
    s += fmt::format("{:<48} {:<22} {:<18} {:>12} {:>12}\n", t.name, shape, type, t.nbytes, t.offset);
  }
  return s;
}

}  // namespace qz
