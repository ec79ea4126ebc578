#include "qz/pipeline/plan.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/int_grid.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/pipeline/importance.hpp"
#include "qz/pipeline/mixes.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

constexpr const char* kVersion = QUANTIZE_VERSION;

std::string known_types() {
  std::string s = "mixes ";
  for (const auto& m : mixes()) s += std::string(m.name) + " ";
  s += "(Q3_K/Q4_K/Q5_K = their _M mix); formats ";
  for (const auto& e : format_table()) s += std::string(e.name) + " ";
  return s + "int<2..8>_<sym|asym>_<g<N>|row|tensor>";
}

IntGridSpec int_spec(const QuantizeOptions& o) {
  IntGridSpec s;
  s.bits = o.bits;
  s.symmetric = o.method == MethodKind::Absmax || ((uses_gptq(o.method) || uses_awq(o.method)) && o.symmetric);
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

// What the options ask for: a llama-quantize mix, or one format for every weight.
struct Target {
  std::optional<Nf4Options> nf4;  // --method nf4 / fp4
  const Mix* mix = nullptr;
  std::optional<IntGridSpec> grid;  // absmax / zeropoint, or an int grid named by --type
  FormatPtr format;                 // a fixed format (grids mapped to a llama.cpp type)
  std::string name;
};

Target resolve_target(const QuantizeOptions& o) {
  Target t;
  if (o.method == MethodKind::Nf4 || o.method == MethodKind::Fp4) {
    Nf4Options n;
    n.blocksize = o.nf4_blocksize;
    n.double_quant = o.double_quant;
    n.fp4 = o.method == MethodKind::Fp4;
    validate_nf4_options(n);
    t.nf4 = n;
    t.name = n.name();
    return t;
  }
  if (o.method == MethodKind::Rtn || ((uses_gptq(o.method) || uses_awq(o.method)) && !o.type.empty())) {
    t.name = o.type.empty() ? "Q8_0" : o.type;
    if ((t.mix = find_mix(t.name))) {
      t.name = std::string(t.mix->name);
      return t;
    }
    if (const auto spec = parse_int_format_name(t.name)) {
      t.grid = spec;
      t.name = int_format_name(*spec);
      return t;
    }
    throw UsageError(fmt::format("--type {}: unknown type (known: {})", t.name, known_types()));
  }
  const IntGridSpec spec = int_spec(o);
  validate_int_spec(spec);
  if ((t.format = native_equivalent(spec))) {
    t.name = t.format->name();
    return t;
  }
  t.grid = spec;
  t.name = int_format_name(spec);
  return t;
}

// The format of a 2-D weight under a single-format target: the output head keeps more bits, as in llama-quantize.
std::pair<FormatPtr, std::string> single_format(const Target& t, const QuantizeOptions& o, const TensorRoleInfo& role,
                                                bool has_output, size_t cols) {
  FormatPtr base = t.format ? t.format : make_int_format(*t.grid, cols);
  std::string why = o.method == MethodKind::Rtn || !o.type.empty() ? "--type " + t.name
                    : t.format ? fmt::format("{} {}-bit groups of {} is llama.cpp's {}", method_name(o.method),
                                             o.bits, o.group_size, t.name)
                               : "--method " + method_name(o.method);
  const bool head = role.role == TensorRole::Output || (!has_output && role.role == TensorRole::TokenEmbedding);
  if (head && !o.pure && base->is_quantized()) {
    if (base->bits_per_weight() < 6.5625 && cols % 256 == 0)
      return {format_for_ggml_type(GgmlType::Q6_K), "output head keeps more bits (Q6_K), as llama-quantize does"};
    if (base->bits_per_weight() < 8.5)
      return {format_for_ggml_type(GgmlType::Q8_0), "output head keeps more bits (Q8_0), as llama-quantize does"};
  }
  return {base, why};
}

int config_int(const Checkpoint& ck, const char* key, int fallback) {
  if (!ck.config()) return fallback;
  const auto it = ck.config()->find(key);
  return it != ck.config()->end() && it->is_number_integer() ? it->get<int>() : fallback;
}

}  // namespace

std::vector<uint64_t> TensorPlan::logical_ne() const {
  std::vector<uint64_t> ne(shape.rbegin(), shape.rend());
  if (ne.empty()) ne.push_back(1);
  return ne;
}

std::vector<uint64_t> TensorPlan::stored_ne() const {
  if (nf4) return {(rows * cols + 1) / 2};
  std::vector<uint64_t> ne = logical_ne();
  if (format->storage_type() == GgmlType::I8 && format->is_quantized()) ne[0] = format->row_bytes(cols);
  return ne;
}

std::vector<std::string> nf4_companions(const std::string& tensor, const Nf4Options& o) {
  if (o.double_quant) return {tensor + ".absmax", tensor + ".nested_absmax", tensor + ".nested_offset"};
  return {tensor + ".absmax"};
}

std::string custom_format_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".format"; }
std::string custom_shape_key(const std::string& tensor) { return "quantize.tensor." + tensor + ".shape"; }

void validate_options(const QuantizeOptions& o) {
  const bool grid_method = o.method == MethodKind::Absmax || o.method == MethodKind::Zeropoint ||
                           o.method == MethodKind::Nf4 || o.method == MethodKind::Fp4;
  if (uses_awq(o.method) && o.awq_tokens < 1) throw UsageError("--awq-tokens must be positive");
  if (uses_gptq(o.method)) {
    if (!(o.damp >= 0.0) || o.damp > 100.0) throw UsageError(fmt::format("--damp {}: use a value in [0, 100]", o.damp));
    if (o.block_size < 1) throw UsageError(fmt::format("--block-size {}: must be positive", o.block_size));
  }
  if (grid_method && !o.type.empty())
    throw UsageError(fmt::format("--type {} cannot be combined with --method {}: absmax and zeropoint choose their "
                                 "own grid from --bits / --group-size",
                                 o.type, method_name(o.method)));
  if ((o.method == MethodKind::Absmax || o.method == MethodKind::Zeropoint || uses_gptq(o.method) || uses_awq(o.method)) &&
      o.type.empty() && o.group_size < -1)
    throw UsageError(fmt::format("--group-size {}: use a positive group, -1 (per output row) or 0 (per tensor)",
                                 o.group_size));
  (void)resolve_target(o);
  for (const auto& t : o.tensor_types) (void)resolve_type(t.type, 256, "--tensor-type " + t.pattern + "=");
}

Plan make_plan(const Checkpoint& ckpt, const QuantizeOptions& opts_in, const Imatrix* imatrix,
               const std::string& imatrix_file, const CalibrationSet* calib) {
  QuantizeOptions opts = opts_in;
  if (imatrix) opts.has_imatrix = true;
  validate_options(opts);
  const Target target = resolve_target(opts);
  Plan plan;
  plan.target = target.name;
  if (target.mix) plan.file_type = target.mix->file_type;

  MixContext ctx;
  ctx.has_imatrix = opts.has_imatrix;
  ctx.has_output = false;
  for (const auto& e : ckpt.tensors()) {
    const TensorRoleInfo r = classify_tensor(e.tensor->name);
    if (r.role == TensorRole::Output) ctx.has_output = true;
    if (r.role == TensorRole::AttnV || r.role == TensorRole::AttnQkv) ++ctx.n_attn_v;
    if (r.role == TensorRole::FfnDown) ++ctx.n_ffn_down;
  }
  if (ckpt.config()) {
    const fs::path dir = fs::is_directory(ckpt.source()) ? ckpt.source() : ckpt.source().parent_path();
    plan.model = parse_model_config(*ckpt.config(), (dir / "config.json").string(), dir.filename().string());
    plan.vocab = read_vocabulary(dir, std::string(plan.model->arch->gguf_name), plan.model->vocab_size);
  }
  const int heads = config_int(ckpt, "num_attention_heads", 1);
  const int kv_heads = config_int(ckpt, "num_key_value_heads", heads);
  ctx.n_gqa = kv_heads > 0 ? heads / kv_heads : 1;

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
    if (plan.model) {
      const auto gguf = gguf_tensor_name(*plan.model, t.name);
      if (!gguf) {
        plan.skipped.push_back({t.name, "not used by llama.cpp"});
        continue;
      }
      p.name = *gguf;
      p.row_order = gguf_row_order(*plan.model, t.name, t.shape.empty() ? 1 : t.shape.front());
    }
    p.shape = t.shape;
    p.cols = t.shape.empty() ? 1 : t.shape.back();
    p.rows = t.numel() / p.cols;
    p.input_bytes = t.end - t.begin;

    if (t.shape.size() != 2) {
      p.format = format_for_ggml_type(GgmlType::F32);
      p.reason = t.shape.size() < 2 ? "1-D tensors (norms, biases) stay F32" : "tensors that are not 2-D stay F32";
    } else {
      const TensorRoleInfo role = classify_tensor(p.name);
      const auto ov = std::find_if(opts.tensor_types.begin(), opts.tensor_types.end(), [&](const TensorTypeOverride& o) {
        return std::regex_search(p.name, o.re) || std::regex_search(t.name, o.re);
      });
      if (ov != opts.tensor_types.end()) {
        p.format = resolve_type(ov->type, p.cols, "--tensor-type");
        p.reason = fmt::format("--tensor-type {}={}", ov->pattern, ov->type);
      } else if (target.nf4) {
        if (role.role == TensorRole::TokenEmbedding || role.role == TensorRole::Output) {
          p.format = format_for_ggml_type(GgmlType::F16);
          p.reason = "bitsandbytes keeps embeddings and the output head unquantized: F16";
        } else {
          p.nf4 = target.nf4;
          p.format = make_nf4_format(*target.nf4);
          p.reason = "--method " + method_name(opts.method);
        }
      } else if (target.mix) {
        if (opts.pure) {
          p.format = format_for_ggml_type(target.mix->base);
          p.reason = fmt::format("{} base type (--pure)", target.mix->name);
        } else {
          const MixChoice c = mix_type(*target.mix, role, p.cols, ctx);
          p.format = format_for_ggml_type(c.type);
          p.reason = c.reason;
        }
      } else {
        std::tie(p.format, p.reason) = single_format(target, opts, role, ctx.has_output, p.cols);
      }
      if (!p.format->supports_row_length(p.cols)) {
        const std::string from = p.format->name();
        const size_t from_block = p.format->block_size();
        if (opts.no_fallback)
          throw InputError(fmt::format("{}: tensor '{}': row length {} is not a multiple of {}'s block of {} "
                                       "(--no-fallback)",
                                       e.file->path().string(), t.name, p.cols, from, from_block));
        const auto spec = parse_int_format_name(from);
        if (spec && spec->granularity == Granularity::Group) {
          IntGridSpec row = *spec;
          row.granularity = Granularity::Row;
          p.format = make_int_format(row, p.cols);
        } else {
          p.format = format_for_ggml_type(row_length_fallback(p.format->storage_type(), p.cols).value());
        }
        p.fallback = true;
        p.reason = fmt::format("fallback: row length {} is not a multiple of {}'s block of {}, so {}", p.cols, from,
                               from_block, p.format->name());
      }
    }
    if (p.nf4) {
      const size_t n = t.numel(), blocks = nf4_blocks(n, *p.nf4);
      p.output_bytes = (n + 1) / 2 + (p.nf4->double_quant ? blocks + 4 * ((blocks + 255) / 256) + 4 : 4 * blocks);
    } else {
      p.output_bytes = p.rows * p.format->row_bytes(p.cols);
    }
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
  if (plan.model && plan.model->arch->requires_qkv_bias) {
    for (uint32_t l = 0; l < plan.model->block_count; ++l)
      for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) {
        const std::string want = fmt::format("blk.{}.{}", l, b);
        if (std::none_of(plan.tensors.begin(), plan.tensors.end(), [&](const TensorPlan& t) { return t.name == want; }))
          throw InputError(fmt::format("{}: architecture {} needs the q/k/v biases, but '{}' is missing",
                                       ckpt.source().string(), plan.model->arch->hf_name, want));
      }
  }
  if (uses_awq(opts.method)) {
    if (calib == nullptr)
      throw UsageError(fmt::format("--method {} needs calibration activations: --calib FILE", method_name(opts.method)));
    if (!plan.model)
      throw UsageError(fmt::format("--method {} folds its scales into the model's norms and linears: it needs a "
                                   "checkpoint with a config.json of a supported architecture ({})",
                                   method_name(opts.method), ckpt.source().string()));
  }
  if (uses_gptq(opts.method)) {
    if (calib == nullptr)
      throw UsageError(fmt::format("--method {} needs calibration activations: --calib FILE", method_name(opts.method)));
    for (auto& t : plan.tensors) {
      if (!t.format->is_quantized() || t.shape.size() != 2) continue;
      const TensorRole role = classify_tensor(t.name).role;
      if (role == TensorRole::TokenEmbedding) {
        t.reason += "; embeddings are looked up, not multiplied: round-to-nearest";
        continue;
      }
      t.calibration = calib->inputs_of(t.source_name());
      if (!t.calibration.empty()) {
        t.gptq = true;
        continue;
      }
      if (role == TensorRole::Output) {
        t.reason += "; no calibration data for the output head: round-to-nearest";
        continue;
      }
      if (!opts.allow_missing_calib)
        throw InputError(fmt::format("tensor '{}': no calibration activations for GPTQ (expected '{}' in the "
                                     "calibration files; --allow-missing-calib rounds such layers to nearest)",
                                     t.source_name(), t.source_name().substr(0, t.source_name().rfind('.'))));
      t.reason += "; no calibration data: round-to-nearest (--allow-missing-calib)";
      plan.calibration_missing.push_back(t.source_name());
    }
  }
  if (imatrix) {
    ImatrixUse use;
    use.file = imatrix_file;
    use.dataset = imatrix->datasets.empty() ? std::string() : imatrix->datasets.front();
    use.entries = static_cast<uint32_t>(imatrix->tensors.size());
    use.chunks = imatrix->chunk_count;
    use.missing = attach_importance(plan, *imatrix, imatrix_file);
    plan.imatrix = std::move(use);
  }
  plan.file_bytes = make_gguf_layout(plan, ckpt, opts).file_bytes();
  return plan;
}

GgufWriter make_gguf_layout(const Plan& plan, const Checkpoint& ckpt, const QuantizeOptions& opts) {
  GgufWriter w;
  if (plan.model) {
    write_architecture_metadata(w, *plan.model);
  } else {
    std::string name = ckpt.source().filename().string();
    if (name.empty()) name = ckpt.source().parent_path().filename().string();
    w.set("general.name", name);
  }
  const bool native_quantized = std::any_of(plan.tensors.begin(), plan.tensors.end(), [](const TensorPlan& t) {
    return t.format->llama_native() && t.format->is_quantized();
  });
  if (plan.file_type) w.set("general.file_type", *plan.file_type);
  if (native_quantized) w.set("general.quantization_version", uint32_t{2});
  w.set("quantize.version", std::string(kVersion));
  w.set("quantize.method", method_name(opts.method));
  w.set("quantize.target", plan.target);
  if (plan.imatrix) {
    w.set("quantize.imatrix.file", plan.imatrix->file);
    if (!plan.imatrix->dataset.empty()) w.set("quantize.imatrix.dataset", plan.imatrix->dataset);
    w.set("quantize.imatrix.entries_count", static_cast<int32_t>(plan.imatrix->entries));
    w.set("quantize.imatrix.chunks_count", static_cast<int32_t>(plan.imatrix->chunks));
  }
  if (plan.model) {
    if (plan.vocab) write_vocabulary_metadata(w, *plan.vocab);
    else w.set("tokenizer.ggml.model", "no_vocab");
  }
  for (const auto& t : plan.tensors) {
    if (t.format->llama_native()) continue;
    w.set(custom_format_key(t.name), t.format->name());
    w.set(custom_shape_key(t.name), GgufValue::array(t.logical_ne()));
  }
  if (std::any_of(plan.tensors.begin(), plan.tensors.end(), [](const TensorPlan& t) { return t.nf4.has_value(); })) {
    const auto& nf4 = nf4_code();
    const auto& fp4 = fp4_code();
    const auto& map = dynamic_map();
    w.set("quantize.nf4.quant_map", GgufValue::array(std::vector<float>(nf4.begin(), nf4.end())));
    w.set("quantize.fp4.quant_map", GgufValue::array(std::vector<float>(fp4.begin(), fp4.end())));
    w.set("quantize.nf4.nested_quant_map", GgufValue::array(std::vector<float>(map.begin(), map.end())));
  }
  for (const auto& t : plan.tensors) {
    w.add_tensor(t.name, t.stored_ne(), t.format->storage_type());
    if (!t.nf4) continue;
    const uint64_t blocks = nf4_blocks(t.rows * t.cols, *t.nf4);
    const auto names = nf4_companions(t.name, *t.nf4);
    w.add_tensor(names[0], {blocks}, t.nf4->double_quant ? GgmlType::I8 : GgmlType::F32);
    if (t.nf4->double_quant) {
      w.add_tensor(names[1], {(blocks + 255) / 256}, GgmlType::F32);
      w.add_tensor(names[2], {1}, GgmlType::F32);
    }
  }
  return w;
}

}  // namespace qz
