#include "qz/pipeline/gguf_layout.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/nf4.hpp"

namespace qz {

namespace {

constexpr const char* kVersion = QUANTIZE_VERSION;
constexpr uint32_t kQuantizationVersion = 2;  // ggml's GGML_QNT_VERSION

// How the file was made: the method and its settings, the calibration behind it.
void write_provenance(GgufWriter& w, const Plan& plan) {
  const QuantizeConfig& c = plan.config;
  w.set("quantize.version", std::string(kVersion));
  w.set("quantize.method", method_name(c.method));
  w.set("quantize.target", plan.target());
  for (const auto& [key, value] : c.target.settings) w.set("quantize." + key, value);
  if (c.gptq) {
    w.set("quantize.gptq.damp", static_cast<float>(c.gptq->config.damp));
    w.set("quantize.gptq.block_size", static_cast<uint32_t>(c.gptq->config.block_size));
    w.set("quantize.gptq.act_order", c.gptq->config.act_order);
    w.set("quantize.gptq.static_groups", c.gptq->config.static_groups || c.gptq->config.act_order);
  }
  if (c.awq) {
    w.set("quantize.awq.duo_scaling", c.awq->duo_scaling);
    w.set("quantize.awq.tokens", static_cast<uint32_t>(c.awq->tokens));
    w.set("quantize.awq.clip", c.awq->clip);
  }
  if (plan.calibration) {
    w.set("quantize.calibration.files", GgufValue::strings(plan.calibration->files));
    w.set("quantize.calibration.tokens", plan.calibration->tokens);
  }
  if (plan.imatrix) {
    w.set("quantize.imatrix.file", plan.imatrix->file);
    if (!plan.imatrix->dataset.empty()) w.set("quantize.imatrix.dataset", plan.imatrix->dataset);
    w.set("quantize.imatrix.entries_count", static_cast<int32_t>(plan.imatrix->entries));
    w.set("quantize.imatrix.chunks_count", static_cast<int32_t>(plan.imatrix->chunks));
  }
}

}  // namespace

std::string custom_format_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".format"; }
std::string custom_shape_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".shape"; }

std::string shape_string(const std::vector<uint64_t>& ne) { return fmt::format("{}", fmt::join(ne, " x ")); }

bool is_layout_key(const std::string& key) {
  return key == "general.alignment" || key == "general.file_type" ||
         key.starts_with("quantize.tensor.") || key.starts_with("quantize.nf4.") || key.starts_with("quantize.fp4.");
}

GgufWriter make_gguf_layout(const Plan& plan) {
  GgufWriter w;
  w.set("general.type", "model");
  if (plan.model) {
    write_architecture_metadata(w, *plan.model);
  } else {
    w.set("general.name", plan.source_name);
  }
  w.set("general.size_label", size_label(plan.weights));
  if (plan.card) write_model_card_metadata(w, *plan.card);
  if (plan.file_type) w.set("general.file_type", *plan.file_type);
  w.set("general.quantization_version", kQuantizationVersion);
  write_provenance(w, plan);
  if (plan.model) {
    if (plan.vocab) write_vocabulary_metadata(w, *plan.vocab);
    else w.set("tokenizer.ggml.model", "no_vocab");
  }
  bool nf4 = false;
  for (const auto& t : plan.tensors) {
    if (t.format->llama_native()) continue;
    w.set(custom_format_key(t.name), t.format->name());
    w.set(custom_shape_key(t.name), GgufValue::array(t.logical_ne()));
    nf4 = nf4 || t.format->whole_tensor();
  }
  if (nf4) {  // the code tables, so a reader needs nothing but the file
    const auto& n = nf4_code();
    const auto& f = fp4_code();
    const auto& map = dynamic_map();
    w.set("quantize.nf4.quant_map", GgufValue::array(std::vector<float>(n.begin(), n.end())));
    w.set("quantize.fp4.quant_map", GgufValue::array(std::vector<float>(f.begin(), f.end())));
    w.set("quantize.nf4.nested_quant_map", GgufValue::array(std::vector<float>(map.begin(), map.end())));
  }
  for (const auto& t : plan.tensors)
    for (const auto& part : t.format->stored_parts(t.logical_ne())) w.add_tensor(t.name + part.suffix, part.ne, part.type);
  return w;
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

}  // namespace qz
