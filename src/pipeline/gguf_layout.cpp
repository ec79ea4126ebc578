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

std::string shape_string(const std::vector<uint64_t>& ne) { return fmt::format("{}", fmt::join(ne, " x ")); }

// A GGUF input's metadata, as llama-quantize carries it: every key but the writer's own (general.alignment), the
// split keys of a split input, and the keys that describe the quantization (general.file_type, this tool's keys from
// an earlier run), which are written anew.
void carry_metadata(GgufWriter& w, const GgufFile& in) {
  for (const auto& kv : in.metadata()) {
    if (kv.key == "general.alignment" || kv.key == "general.file_type" || kv.key.starts_with("split.") ||
        kv.key.starts_with("quantize."))
      continue;
    w.set(kv.key, kv.value);
  }
}

GgufWriter make_gguf_layout(const Plan& plan) {
  GgufWriter w;
  if (plan.source_gguf) {
    carry_metadata(w, *plan.source_gguf);
  } else {
    w.set("general.type", "model");
    if (plan.model) {
      write_architecture_metadata(w, *plan.model);
    } else {
      w.set("general.name", plan.source_name);
    }
    w.set("general.size_label", size_label(plan.weights));
  }
  if (plan.card) write_model_card_metadata(w, *plan.card);
  if (plan.file_type) w.set("general.file_type", *plan.file_type);
  w.set("general.quantization_version", kQuantizationVersion);
  write_provenance(w, plan);
  if (plan.model && !plan.source_gguf) {
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
  for (const auto& kv : plan.config.metadata_overrides) w.set(kv.key, kv.value);
  for (const auto& t : plan.tensors)
    for (const auto& part : t.format->stored_parts(t.logical_ne())) w.add_tensor(t.name + part.suffix, part.ne, part.type);
  return w;
}

}  // namespace qz
