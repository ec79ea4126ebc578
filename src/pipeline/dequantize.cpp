#include "qz/pipeline/dequantize.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <optional>

#include "qz/core/error.hpp"
#include "qz/core/half.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/pipeline/gguf_layout.hpp"

namespace qz {

std::vector<float> dequantize_tensor(const GgufFile& file, const GgufTensorInfo& t) {
  return decode_stored_tensor(file, t);
}

size_t dequantize_gguf(const std::filesystem::path& input, const std::filesystem::path& output, DType dtype,
                       bool overwrite) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw UsageError("--dtype must be f32, f16 or bf16");
  const GgufFile file(input);
  std::vector<SafetensorsWriter::Decl> decls;
  std::vector<const GgufTensorInfo*> weights;
  for (const auto& t : file.tensors()) {
    if (is_side_part(file, t)) continue;
    const StoredTensor s = read_stored_tensor(file, t);
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
    if (kv.key == "general.file_type") w.set(kv.key, uint32_t{0});
    if (!is_layout_key(kv.key)) w.set(kv.key, kv.value);
  }
  std::vector<const GgufTensorInfo*> weights;
  for (const auto& t : file.tensors()) {
    if (is_side_part(file, t)) continue;
    w.add_tensor(t.name, read_stored_tensor(file, t).logical_ne, GgmlType::F32);
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
    std::vector<uint64_t> ne = t.ne;
    std::string type(ggml_type_traits(t.type).name);
    if (const GgufValue* fv = file.find(custom_format_key(t.name))) {
      if (const auto* n = fv->get_if<std::string>()) type = *n + " (as " + type + ")";
      if (const GgufValue* sv = file.find(custom_shape_key(t.name)))
        if (const auto* arr = sv->get_if<GgufArray>()) {
          ne.clear();
          for (const auto& item : arr->items)
            if (const auto* v = item.get_if<uint64_t>()) ne.push_back(*v);
        }
    }
    s += fmt::format("{:<48} {:<22} {:<18} {:>12} {:>12}\n", t.name, shape_string(ne), type, t.nbytes, t.offset);
  }
  return s;
}

}  // namespace qz
