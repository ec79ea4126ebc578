#include "qz/pipeline/plan.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/int_grid.hpp"

namespace qz {

namespace {

constexpr const char* kVersion = QUANTIZE_VERSION;

std::string known_types() {
  std::string s;
  for (const auto& e : format_table()) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s + ", int<2..8>_<sym|asym>_<g<N>|row|tensor>";
}

IntGridSpec int_spec(const QuantizeOptions& o) {
  IntGridSpec s;
  s.bits = o.bits;
  s.symmetric = o.method == MethodKind::Absmax;
  if (o.group_size > 0) {
    s.granularity = Granularity::Group;
    s.group = static_cast<size_t>(o.group_size);
  } else if (o.group_size == -1) {
    s.granularity = Granularity::Row;
  } else {
    s.granularity = Granularity::Tensor;
  }
  return s;
}

FormatPtr resolve_type(const std::string& name, size_t cols, const std::string& option) {
  FormatPtr f = find_format(name, cols);
  if (!f) throw UsageError(fmt::format("{} {}: unknown type (known: {})", option, name, known_types()));
  return f;
}

// The method's format for rows of `cols` values, and a description.
std::pair<FormatPtr, std::string> base_format(const QuantizeOptions& o, size_t cols) {
  if (o.method == MethodKind::Rtn) {
    const std::string name = o.type.empty() ? "Q8_0" : o.type;
    FormatPtr f = resolve_type(name, cols, "--type");
    return {f, fmt::format("--type {}", f->name())};
  }
  const IntGridSpec spec = int_spec(o);
  if (FormatPtr native = native_equivalent(spec))
    return {native, fmt::format("{} {}-bit groups of {} is llama.cpp's {}", method_name(o.method), spec.bits,
                                spec.group, native->name())};
  return {make_int_format(spec, cols), fmt::format("--method {}", method_name(o.method))};
}

bool is_output_head(const std::string& name) { return name == "lm_head.weight" || name == "output.weight"; }

}  // namespace

std::vector<uint64_t> TensorPlan::logical_ne() const {
  std::vector<uint64_t> ne(shape.rbegin(), shape.rend());
  if (ne.empty()) ne.push_back(1);
  return ne;
}

std::vector<uint64_t> TensorPlan::stored_ne() const {
  std::vector<uint64_t> ne = logical_ne();
  if (format->storage_type() == GgmlType::I8 && format->is_quantized()) ne[0] = format->row_bytes(cols);
  return ne;
}

std::string custom_format_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".format"; }
std::string custom_shape_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".shape"; }

void validate_options(const QuantizeOptions& o) {
  if (o.method == MethodKind::Rtn) {
    if (!o.type.empty()) (void)resolve_type(o.type, 256, "--type");
  } else {
    if (!o.type.empty())
      throw UsageError(fmt::format("--type {} cannot be combined with --method {}: absmax and zeropoint choose their "
                                   "own integer grid from --bits and --group-size",
                                   o.type, method_name(o.method)));
    if (o.group_size < -1)
      throw UsageError(fmt::format("--group-size {}: use a positive group, -1 (per output row) or 0 (per tensor)",
                                   o.group_size));
    validate_int_spec(int_spec(o));
  }
  for (const auto& t : o.tensor_types) (void)resolve_type(t.type, 256, "--tensor-type " + t.pattern + "=");
}

Plan make_plan(const Checkpoint& ckpt, const QuantizeOptions& opts) {
  validate_options(opts);
  Plan plan;
  for (const auto& e : ckpt.tensors()) {
    const SafetensorsTensor& t = *e.tensor;
    if (!dtype_is_numeric_input(t.dtype)) {
      plan.skipped.push_back({t.name, fmt::format("{} tensor is not a weight", dtype_name(t.dtype))});
      continue;
    }
    if (t.numel() == 0) {
      plan.skipped.push_back({t.name, "empty tensor"});
      continue;
    }
    if (t.shape.size() > 4)
      throw InputError(fmt::format("{}: tensor '{}' has {} dimensions; GGUF allows at most 4", e.file->path().string(),
                                   t.name, t.shape.size()));
    if (t.name.size() > kGgufMaxNameLength)
      throw InputError(fmt::format("{}: tensor name '{}' is longer than GGUF's {} bytes", e.file->path().string(),
                                   t.name, kGgufMaxNameLength));
    TensorPlan p;
    p.source = &e;
    p.name = t.name;
    p.shape = t.shape;
    p.cols = t.shape.empty() ? 1 : t.shape.back();
    p.rows = t.numel() / p.cols;
    p.input_bytes = t.end - t.begin;

    if (t.shape.size() != 2) {
      p.format = format_table().front().format;  // F32
      p.reason = t.shape.size() < 2 ? "1-D tensors (norms, biases) stay F32" : "tensors that are not 2-D stay F32";
    } else {
      const auto ov = std::find_if(opts.tensor_types.begin(), opts.tensor_types.end(),
                                   [&](const TensorTypeOverride& o) { return std::regex_search(t.name, o.re); });
      auto [base, why] = base_format(opts, p.cols);
      if (ov != opts.tensor_types.end()) {
        p.format = resolve_type(ov->type, p.cols, "--tensor-type");
        p.reason = fmt::format("--tensor-type {}={}", ov->pattern, ov->type);
      } else if (is_output_head(t.name) && base->is_quantized() && base->bits_per_weight() < 8.5) {
        p.format = format_for_ggml_type(GgmlType::Q8_0);
        p.reason = "output head keeps more bits (Q8_0), as llama-quantize does";
      } else {
        p.format = base;
        p.reason = why;
      }
      if (!p.format->supports_row_length(p.cols)) {
        const auto spec = parse_int_format_name(p.format->name());
        const std::string from = p.format->name();
        const size_t from_block = p.format->block_size();
        if (spec && spec->granularity == Granularity::Group) {
          IntGridSpec row = *spec;
          row.granularity = Granularity::Row;
          p.format = make_int_format(row, p.cols);
        } else {
          p.format = format_for_ggml_type(GgmlType::F16);
        }
        p.fallback = true;
        p.reason = fmt::format("fallback: row length {} is not a multiple of {}'s block of {}, so {}", p.cols, from,
                               from_block, p.format->name());
      }
    }
    p.output_bytes = p.rows * p.format->row_bytes(p.cols);
    plan.input_bytes += p.input_bytes;
    plan.tensor_bytes += p.output_bytes;
    plan.weights += t.numel();
    if (p.fallback) {
      ++plan.fallbacks;
      plan.fallback_bytes += p.output_bytes;
    }
    plan.tensors.push_back(std::move(p));
  }
  if (plan.tensors.empty()) throw InputError(ckpt.source().string() + ": no tensor to write");
  plan.file_bytes = make_gguf_layout(plan, ckpt, opts).file_bytes();
  return plan;
}

GgufWriter make_gguf_layout(const Plan& plan, const Checkpoint& ckpt, const QuantizeOptions& opts) {
  GgufWriter w;
  std::string name = ckpt.source().filename().string();
  if (name.empty()) name = ckpt.source().parent_path().filename().string();
  w.set("general.name", name);
  const bool native_quantized = std::any_of(plan.tensors.begin(), plan.tensors.end(), [](const TensorPlan& t) {
    return t.format->llama_native() && t.format->is_quantized();
  });
  if (native_quantized) w.set("general.quantization_version", uint32_t{2});
  w.set("quantize.version", std::string(kVersion));
  w.set("quantize.method", method_name(opts.method));
  for (const auto& t : plan.tensors) {
    if (t.format->llama_native()) continue;
    w.set(custom_format_key(t.name), t.format->name());
    w.set(custom_shape_key(t.name), GgufValue::array(t.logical_ne()));
  }
  for (const auto& t : plan.tensors) w.add_tensor(t.name, t.stored_ne(), t.format->storage_type());
  return w;
}

}  // namespace qz
