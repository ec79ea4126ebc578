#include "qz/pipeline/plan.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "qz/core/error.hpp"
#include "qz/engine/model_weights.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/int_grid.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/pipeline/mixes.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

int config_int(const Checkpoint& ck, const char* key, int fallback) {
  if (!ck.config()) return fallback;
  const auto it = ck.config()->find(key);
  return it != ck.config()->end() && it->is_number_integer() ? it->get<int>() : fallback;
}

// Model-level facts the per-tensor choices depend on (llama-quantize's counters).
MixContext mix_context(const Checkpoint& ckpt, bool has_imatrix) {
  MixContext ctx;
  ctx.has_imatrix = has_imatrix;
  ctx.has_output = false;
  for (const auto& e : ckpt.tensors()) {
    const TensorRoleInfo r = classify_tensor(e.tensor->name);
    if (r.role == TensorRole::Output) ctx.has_output = true;
    if (r.role == TensorRole::AttnV || r.role == TensorRole::AttnQkv) ++ctx.n_attn_v;
    if (r.role == TensorRole::FfnDown) ++ctx.n_ffn_down;
  }
  const int heads = config_int(ckpt, "num_attention_heads", 1);
  const int kv_heads = config_int(ckpt, "num_key_value_heads", heads);
  ctx.n_gqa = kv_heads > 0 ? heads / kv_heads : 1;
  if (const GgufFile* g = ckpt.gguf()) {  // a GGUF input states them in its metadata
    const GgufValue* arch = g->find("general.architecture");
    const std::string a = arch && arch->get_if<std::string>() ? *arch->get_if<std::string>() : "";
    const auto u32 = [&](const std::string& key) -> uint32_t {
      const GgufValue* v = g->find(key);
      return v && v->get_if<uint32_t>() ? *v->get_if<uint32_t>() : 0;
    };
    const uint32_t h = u32(a + ".attention.head_count"), kv = u32(a + ".attention.head_count_kv");
    ctx.n_gqa = h && kv ? static_cast<int>(h / kv) : 1;
  }
  return ctx;
}

// A GGUF input (llama-quantize's input): its metadata is carried over, its tensors keep their names and row order;
// the model configuration comes from the metadata when the engine knows the architecture (GPTQ, AWQ and text
// calibration need it; round-to-nearest does not).
void read_gguf_model(const Checkpoint& ckpt, Plan& plan) {
  const GgufFile& g = *ckpt.gguf();
  plan.source_gguf = &g;
  const GgufValue* name = g.find("general.name");
  plan.source_name = name && name->get_if<std::string>() ? *name->get_if<std::string>() : g.path().stem().string();
  try {
    plan.model = model_config_from_gguf(g);
  } catch (const InputError& e) {
    plan.model_unavailable = e.what();
  }
}

// config.json, the tokenizer and the model card, when the checkpoint is a model of a supported architecture.
void read_model(const Checkpoint& ckpt, Plan& plan) {
  if (ckpt.gguf()) return read_gguf_model(ckpt, plan);
  std::string name = ckpt.source().filename().string();
  if (name.empty()) name = ckpt.source().parent_path().filename().string();
  plan.source_name = name;
  if (!ckpt.config()) {
    // Without config.json the tensors keep their names and the file has no architecture: a GGUF of tensors that
    // GGUF readers parse but llama.cpp cannot run. Say so when the names are a transformer's.
    for (const auto& e : ckpt.tensors())
      if (e.tensor->name.find(".layers.") != std::string::npos) {
        plan.config.warnings.push_back(fmt::format(
            "{}: no config.json beside the weights: the output keeps the tensors' own names and has no architecture "
            "metadata, so llama.cpp will not run it (put the model's config.json beside the weights)",
            ckpt.source().string()));
        break;
      }
    return;
  }
  const fs::path dir = fs::is_directory(ckpt.source()) ? ckpt.source() : ckpt.source().parent_path();
  plan.model = parse_model_config(*ckpt.config(), (dir / "config.json").string(), dir.filename().string());
  plan.packed = read_packed_scheme(dir, ckpt.config());
  // vocab_size pads the vocabulary: bound it by the embeddings first (a huge one would take minutes and memory).
  for (const auto& e : ckpt.tensors())
    if (e.tensor->shape.size() == 2 && !(plan.packed && is_packed_part(e.tensor->name)) && gguf_tensor_name(*plan.model, e.tensor->name) == std::optional<std::string>("token_embd.weight") &&
        plan.model->vocab_size && e.tensor->shape[0] != plan.model->vocab_size)
      throw InputError(fmt::format("{}: vocab_size {} does not match the {} rows of the token embeddings ({})",
                                   (dir / "config.json").string(), plan.model->vocab_size, e.tensor->shape[0],
                                   e.tensor->name));
  plan.vocab = read_vocabulary(dir, std::string(plan.model->arch->gguf_name), plan.model->vocab_size);
  plan.card = read_model_card(dir / "README.md");
}

// The tensor's source, output name and shape; nullopt (with the reason in `skipped`) for tensors not written.
std::optional<TensorPlan> source_of(const Checkpoint::Entry& e, const Plan& plan, std::vector<SkippedTensor>& skipped) {
  const SafetensorsTensor& t = *e.tensor;
  if (!t.ggml_type && !dtype_is_numeric_input(t.dtype)) {
    skipped.push_back({t.name, fmt::format("{} tensor is not a weight", dtype_name(t.dtype))});
    return std::nullopt;
  }
  if (t.numel() == 0) {
    skipped.push_back({t.name, "empty tensor"});
    return std::nullopt;
  }
  if (t.shape.size() > 4)
    throw InputError(fmt::format("{}: tensor '{}' has {} dimensions; GGUF allows at most 4", e.file->path().string(),
                                 t.name, t.shape.size()));
  if (t.name.size() > kGgufMaxNameLength)
    throw InputError(fmt::format("{}: tensor name '{}' is longer than GGUF's {} bytes", e.file->path().string(), t.name,
                                 kGgufMaxNameLength));
  TensorPlan p;
  p.source = &e;
  p.name = t.name;
  if (t.ggml_type) {
    const FormatPtr f = format_for_ggml_type(*t.ggml_type);
    if (f == nullptr)
      throw InputError(fmt::format("{}: tensor '{}' is {}, a type this tool cannot decode", e.file->path().string(),
                                   t.name, ggml_type_label(*t.ggml_type)));
    if (!plan.config.allow_requantize)
      throw InputError(fmt::format("{}: tensor '{}' is already quantized ({}): requantizing compounds the rounding "
                                   "error; pass --allow-requantize to decode and quantize it again, or start from the "
                                   "F16 / BF16 / F32 model",
                                   e.file->path().string(), t.name, f->name()));
  } else if (plan.source_gguf && t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16) {
    skipped.push_back({t.name, fmt::format("{} tensor is not a weight", dtype_name(t.dtype))});
    return std::nullopt;
  }
  if (plan.model && !plan.source_gguf) {
    const auto gguf = gguf_tensor_name(*plan.model, t.name);
    if (!gguf) {
      skipped.push_back({t.name, "not used by llama.cpp"});
      return std::nullopt;
    }
    p.name = *gguf;
    p.row_order = gguf_row_order(*plan.model, t.name, t.shape.empty() ? 1 : t.shape.front());
  }
  p.shape = t.shape;
  p.cols = t.shape.empty() ? 1 : t.shape.back();
  p.rows = t.numel() / p.cols;
  p.input_bytes = t.end - t.begin;
  return p;
}

FormatPtr named_format(const std::string& name, size_t cols) { return find_format(name, cols); }

// The format of a 2-D weight: per-tensor rules first, then the target (a mix's choice or the single format).
void choose_format(TensorPlan& p, const QuantizeConfig& cfg, const MixContext& ctx) {
  const TensorRules& rules = cfg.rules;
  const TargetConfig& target = cfg.target;
  const TensorRoleInfo role = classify_tensor(p.name);
  const bool is_output = role.role == TensorRole::Output;
  const bool serves_as_output = is_output || (!ctx.has_output && role.role == TensorRole::TokenEmbedding);
  const auto ov = std::find_if(rules.overrides.begin(), rules.overrides.end(), [&](const TensorTypeOverride& o) {
    return std::regex_search(p.name, o.re) || std::regex_search(p.source_name(), o.re);
  });
  if (ov != rules.overrides.end()) {
    p.format = named_format(ov->type, p.cols);
    p.reason = fmt::format("--tensor-type {}={}", ov->pattern, ov->type);
    return;
  }
  if (is_output && rules.leave_output) {
    p.format = format_for_ggml_type(p.source->tensor->dtype == DType::F32 ? GgmlType::F32 : GgmlType::F16);
    if (p.source->tensor->dtype == DType::BF16) p.format = format_for_ggml_type(GgmlType::BF16);
    p.reason = "--leave-output-tensor: kept as " + p.format->name();
    return;
  }
  if (is_output && !rules.output_type.empty()) {
    p.format = named_format(rules.output_type, p.cols);
    p.reason = "--output-tensor-type " + rules.output_type;
    return;
  }
  if (role.role == TensorRole::TokenEmbedding && !rules.embedding_type.empty()) {
    p.format = named_format(rules.embedding_type, p.cols);
    p.reason = "--token-embedding-type " + rules.embedding_type;
    return;
  }
  if (target.mix) {
    if (rules.pure) {
      p.format = format_for_ggml_type(target.mix->base);
      p.reason = fmt::format("{} base type (--pure)", target.mix->name);
    } else {
      const MixChoice c = mix_type(*target.mix, role, p.cols, ctx);
      p.format = format_for_ggml_type(c.type);
      p.reason = c.reason;
    }
    return;
  }
  p.format = target.format_for(p.cols);
  p.reason = target.why;
  if (p.format->whole_tensor()) {
    if (role.role == TensorRole::TokenEmbedding || is_output) {
      p.format = format_for_ggml_type(GgmlType::F16);
      p.reason = "bitsandbytes keeps embeddings and the output head unquantized: F16";
    }
    return;
  }
  if (serves_as_output && !rules.pure && p.format->is_quantized())
    if (const auto up = output_head_choice(p.format->bits_per_weight(), is_output ? "output head" : "tied token embedding / output head")) {
      p.format = format_for_ggml_type(up->type);
      p.reason = up->reason;
    }
}

// llama.cpp's row-length fallback, or an error with --no-fallback. Integer groups become a per-row grid, except
// that a grid stored as a llama.cpp type never falls back to the project's own layout (the file would no longer
// load in llama.cpp): where the row cannot hold it either, the tensor is F16, as llama-quantize keeps such rows.
void apply_fallback(TensorPlan& p, bool no_fallback) {
  if (p.format->supports_row_length(p.cols)) return;
  const std::string from = p.format->name();
  const size_t from_block = p.format->block_size();
  if (no_fallback)
    throw InputError(fmt::format("{}: tensor '{}': row length {} is not a multiple of {}'s block of {} (--no-fallback)",
                                 p.source->file->path().string(), p.source_name(), p.cols, from, from_block));
  const auto spec = parse_int_format_name(from);
  if (spec && spec->granularity == Granularity::Group) {
    IntGridSpec row = *spec;
    row.granularity = Granularity::Row;
    p.format = make_int_format(row, p.cols);
    if (native_storage(*spec, 0) && !p.format->llama_native()) p.format = format_for_ggml_type(GgmlType::F16);
  } else {
    p.format = format_for_ggml_type(row_length_fallback(p.format->storage_type(), p.cols).value());
  }
  p.fallback = true;
  const std::string stored = p.format->llama_native() && parse_int_format_name(p.format->name())
                                 ? " (stored as " + ggml_type_label(p.format->storage_type()) + ")"
                                 : "";
  p.reason = fmt::format("fallback: row length {} is not a multiple of {}'s block of {}, so {}{}", p.cols, from,
                         from_block, p.format->name(), stored);
}

// A packed linear of a GPTQ / AWQ checkpoint as the tensor it stands for; its codes carry over when a llama.cpp type
// holds the grid exactly, else its decoded values are quantized into the target like any weight.
std::optional<TensorPlan> packed_source(const PackedLinear& linear, const Plan& plan, std::vector<SkippedTensor>& skipped) {
  const std::string weight = linear.base + ".weight";
  const auto gguf = gguf_tensor_name(*plan.model, weight);
  if (!gguf) {
    skipped.push_back({weight, "not used by llama.cpp"});
    return std::nullopt;
  }
  TensorPlan p;
  p.source = linear.qweight;
  p.set_packed(std::make_shared<const PackedLinear>(linear));
  p.name = *gguf;
  p.shape = {linear.out_features, linear.in_features};
  p.rows = linear.out_features;
  p.cols = linear.in_features;
  p.row_order = gguf_row_order(*plan.model, weight, linear.out_features);
  for (const Checkpoint::Entry* e : {linear.qweight, linear.qzeros, linear.scales, linear.g_idx})
    if (e) p.input_bytes += e->tensor->end - e->tensor->begin;
  return p;
}

// A bitsandbytes 4-bit linear as the tensor it stands for (its values decoded from its blocks).
std::optional<TensorPlan> bnb4_source(const Checkpoint::Entry& e, std::shared_ptr<const Bnb4Linear> linear, const Plan& plan) {
  const auto gguf = gguf_tensor_name(*plan.model, e.tensor->name);
  if (!gguf) return std::nullopt;
  TensorPlan p;
  p.source = &e;
  p.name = *gguf;
  p.shape = {linear->out_features, linear->in_features};
  p.rows = linear->out_features;
  p.cols = linear->in_features;
  p.row_order = gguf_row_order(*plan.model, e.tensor->name, linear->out_features);
  for (const Checkpoint::Entry* x : linear->parts()) p.input_bytes += x->tensor->end - x->tensor->begin;
  p.bnb4 = std::move(linear);
  return p;
}

void choose_packed_format(TensorPlan& p, const QuantizeConfig& cfg, const MixContext& ctx, std::vector<std::string>& warnings) {
  std::string why_not;
  if (const auto native = packed_native_type(*p.packed, &why_not)) {
    p.format = format_for_ggml_type(*native);
    p.carry_codes = true;
    p.reason = fmt::format("{}: its codes and scales carried over into {}", p.packed->scheme.name(), p.format->name());
    if (*native == GgmlType::Q4_1) p.reason += " (only the fp16 rounding of each block's min moves a value)";
    return;
  }
  choose_format(p, cfg, ctx);
  apply_fallback(p, cfg.rules.no_fallback);
  p.reason = fmt::format("{} cannot carry over ({}): decoded, then {}", p.packed->scheme.name(), why_not, p.reason);
  warnings.push_back(fmt::format("{}: {}", p.source_name(), p.reason));
}

// Per-block tensors llama.cpp requires for the architecture beyond the LLaMA set (Qwen2's q/k/v biases, Qwen3's Q/K
// norms): a checkpoint without them would be written and then fail to load.
void check_required_tensors(const Plan& plan, const Checkpoint& ckpt) {
  if (!plan.model) return;
  const ArchitectureInfo& arch = *plan.model->arch;
  std::vector<std::pair<const char*, const char*>> required;  // (GGUF suffix, what it is)
  if (arch.requires_qkv_bias)
    for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) required.emplace_back(b, "the q/k/v biases");
  if (arch.qk_norm)
    for (const char* n : {"attn_q_norm.weight", "attn_k_norm.weight"}) required.emplace_back(n, "the per-head Q/K norms");
  for (uint32_t l = 0; l < plan.model->block_count; ++l)
    for (const auto& [suffix, what] : required) {
      const std::string want = fmt::format("blk.{}.{}", l, suffix);
      if (std::none_of(plan.tensors.begin(), plan.tensors.end(), [&](const TensorPlan& t) { return t.name == want; }))
        throw InputError(fmt::format("{}: architecture {} needs {}, but '{}' is missing", ckpt.source().string(),
                                     arch.hf_name, what, want));
    }
}

// config.json against the tensors (issue 16, defect 6): every hyper-parameter the tensors imply must agree, or the
// file written (and the q/k permutation, which uses the head size) would be wrong.
void check_config_against_tensors(const Plan& plan, const Checkpoint& ckpt) {
  if (!plan.model || plan.source_gguf) return;  // (a GGUF's hyper-parameters are llama.cpp's to check, as it loads)
  const ModelConfig& m = *plan.model;
  const std::string cfg = (fs::is_directory(ckpt.source()) ? ckpt.source() : ckpt.source().parent_path()).string() + "/config.json";
  auto shape_of = [&](const std::string& gguf) -> const std::vector<uint64_t>* {
    for (const auto& t : plan.tensors)
      if (t.name == gguf) return &t.shape;
    return nullptr;
  };
  auto expect = [&](const std::string& gguf, std::vector<uint64_t> want, const char* what) {
    const auto* got = shape_of(gguf);
    if (got == nullptr || *got == want) return;
    throw InputError(fmt::format("{}: {} says tensor '{}' is [{}], but the checkpoint has [{}] ({})", cfg, what, gguf,
                                 fmt::join(want, ", "), fmt::join(*got, ", "), ckpt.source().string()));
  };
  const uint64_t d = m.embedding_length, hd = m.head_dim;
  if (const auto* e = shape_of("token_embd.weight"))  // (its rows against vocab_size: read_model, before any padding)
    if (e->size() != 2 || (*e)[1] != d)
      throw InputError(fmt::format("{}: hidden_size {} does not match token_embd.weight [{}] ({})", cfg, d, fmt::join(*e, ", "),
                                   ckpt.source().string()));
  uint32_t blocks = 0;
  for (const auto& t : plan.tensors) blocks = std::max<uint32_t>(blocks, static_cast<uint32_t>(classify_tensor(t.name).layer + 1));
  if (blocks != m.block_count)
    throw InputError(fmt::format("{}: num_hidden_layers is {}, but the checkpoint has {} blocks", cfg, m.block_count, blocks));
  for (uint32_t l = 0; l < m.block_count; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    expect(p + "attn_q.weight", {m.head_count * hd, d}, "num_attention_heads x head size, hidden_size");
    expect(p + "attn_k.weight", {m.head_count_kv * hd, d}, "num_key_value_heads x head size, hidden_size");
    expect(p + "attn_v.weight", {m.head_count_kv * hd, d}, "num_key_value_heads x head size, hidden_size");
    expect(p + "attn_output.weight", {d, m.head_count * hd}, "hidden_size, num_attention_heads x head size");
    expect(p + "ffn_gate.weight", {m.feed_forward_length, d}, "intermediate_size, hidden_size");
    expect(p + "ffn_up.weight", {m.feed_forward_length, d}, "intermediate_size, hidden_size");
    expect(p + "ffn_down.weight", {d, m.feed_forward_length}, "hidden_size, intermediate_size");
    expect(p + "attn_norm.weight", {d}, "hidden_size");
    expect(p + "ffn_norm.weight", {d}, "hidden_size");
    if (m.arch->qk_norm) {
      expect(p + "attn_q_norm.weight", {hd}, "head size");
      expect(p + "attn_k_norm.weight", {hd}, "head size");
    }
  }
}

uint64_t calib_tokens(const std::vector<CalibInput>& inputs) {
  uint64_t n = 0;
  for (const auto& in : inputs) {
    if (in.hessian_tokens == nullptr) {
      n += in.tensor->shape.empty() ? 0 : in.tensor->shape[0];
      continue;
    }
    n += in.hessian_token_count();
  }
  return n;
}

// GPTQ: every quantized 2-D weight but the embeddings gets its calibration inputs. Without a calibration set (a dry
// run) every weight that would be calibrated is marked so, the output head (whose data is optional) excepted.
void attach_calibration(Plan& plan, const CalibrationSet* calib, bool allow_missing) {
  for (auto& t : plan.tensors) {
    if (!t.format->is_quantized() || t.shape.size() != 2) continue;
    const TensorRole role = classify_tensor(t.name).role;
    if (role == TensorRole::TokenEmbedding) continue;  // search_embeddings
    if (calib == nullptr) {
      t.gptq = role != TensorRole::Output;
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
    if (!allow_missing)
      throw InputError(fmt::format("tensor '{}': no calibration activations for GPTQ (expected '{}' in the "
                                   "calibration files; --allow-missing-calib rounds such layers to nearest)",
                                   t.source_name(), t.source_name().substr(0, t.source_name().rfind('.'))));
    t.reason += "; no calibration data: round-to-nearest (--allow-missing-calib)";
    plan.calibration_missing.push_back(t.source_name());
  }
}

// GPTQ and AWQ leave the token embeddings (looked up, not multiplied) to rounding; calibrated methods round them with
// the format's own least-squares grid search (its importance-weighted search with equal weights) instead of its
// plain rounding (llama.cpp's Q4_0 takes max / -8): a smaller error for the same bytes. Plain RTN stays llama.cpp's.
void search_embeddings(Plan& plan) {
  for (auto& t : plan.tensors) {
    if (!t.format->is_quantized() || t.shape.size() != 2 || t.format->whole_tensor()) continue;
    if (classify_tensor(t.name).role != TensorRole::TokenEmbedding) continue;
    t.importance = std::make_shared<const std::vector<float>>(t.cols, 1.0f);
    t.reason += "; embeddings are looked up, not multiplied: rounded with the format's least-squares grid search";
  }
}

void describe_calibration(Plan& plan, const CalibrationSet& calib) {
  CalibrationUse use;
  for (const auto& p : calib.paths()) use.files.push_back(p.filename().string());
  for (const auto& t : plan.tensors) {
    const auto inputs = t.calibration.empty() ? calib.inputs_of(t.source_name()) : t.calibration;
    if (t.shape.size() == 2 && !inputs.empty()) {
      use.tokens = calib_tokens(inputs);
      break;
    }
  }
  plan.calibration = std::move(use);
}

// llama-quantize's one K-quant that needs importance: Q2_K tensors of a Q2_K_S file (not the embeddings or the head).
bool needs_importance(const Plan& plan, const TensorPlan& t) {
  if (!plan.config.target.mix || plan.config.target.mix->id != MixId::Q2_K_S || plan.config.method != Method::Rtn)
    return false;
  const TensorRole role = classify_tensor(t.name).role;
  return t.format->storage_type() == GgmlType::Q2_K && role != TensorRole::TokenEmbedding && role != TensorRole::Output;
}

// The imatrix entry of every quantized 2-D weight it covers (llama.cpp's GGUF names match HF names through their
// role), filtered by --include-weights / --exclude-weights. Q2_K_S's Q2_K tensors must have one.
void attach_importance(Plan& plan, const Imatrix& m, const std::string& imatrix_file) {
  ImatrixUse use;
  use.file = imatrix_file;
  use.dataset = m.datasets.empty() ? std::string() : m.datasets.front();
  use.entries = static_cast<uint32_t>(m.tensors.size());
  use.chunks = m.chunk_count;
  for (auto& t : plan.tensors) {
    if (!t.format->is_quantized() || t.shape.size() != 2 || t.format->whole_tensor()) continue;
    if (!plan.config.imatrix.uses(t.name)) {
      if (needs_importance(plan, t))
        throw UsageError(fmt::format("{}: Q2_K_S needs the importance of its Q2_K tensors, as llama-quantize does, and "
                                     "{} excludes '{}'",
                                     imatrix_file, plan.config.imatrix.include.empty() ? "--exclude-weights" : "--include-weights", t.name));
      t.reason += plan.config.imatrix.include.empty() ? "; --exclude-weights: no imatrix" : "; not in --include-weights: no imatrix";
      continue;
    }
    auto it = m.tensors.find(t.name);
    if (it == m.tensors.end()) {
      const std::string gguf = gguf_weight_name(t.name);
      if (!gguf.empty()) it = m.tensors.find(gguf);
    }
    if (it == m.tensors.end()) {
      if (needs_importance(plan, t))
        throw InputError(fmt::format("{}: no entry for '{}' ('{}'): Q2_K_S needs the importance of its Q2_K tensors, as "
                                     "llama-quantize does",
                                     imatrix_file, t.name, t.source_name()));
      if (!t.importance) use.missing.push_back(t.name);  // (the embeddings' search needs no entry)
      continue;
    }
    const ImatrixTensor& e = it->second;
    if (e.counts.size() != 1 || e.columns() != t.cols)
      throw InputError(fmt::format("{}: entry '{}' has {} values in {} matrices but tensor '{}' ('{}') has rows of {}",
                                   imatrix_file, it->first, e.sum2.size(), e.counts.size(), t.name, t.source_name(), t.cols));
    t.importance = std::make_shared<const std::vector<float>>(e.importance());
  }
  plan.imatrix = std::move(use);
}

// llama3 rope scaling: llama.cpp reads the frequency factors from a tensor its converter makes, rope_freqs.weight.
void add_rope_freqs(Plan& plan) {
  if (!plan.model || plan.model->rope_freq_factors.empty() || plan.source_gguf) return;  // (a GGUF has the tensor)
  TensorPlan p;
  p.name = "rope_freqs.weight";
  p.generated = std::make_shared<const std::vector<float>>(plan.model->rope_freq_factors);
  p.shape = {p.generated->size()};
  p.rows = 1;
  p.cols = p.generated->size();
  p.format = format_for_ggml_type(GgmlType::F32);
  p.reason = "llama3 rope scaling: the frequency factors, as llama.cpp's converter writes them";
  plan.tensors.insert(plan.tensors.begin(), std::move(p));
}

// Tensors outside the decoder blocks first, then block 0, 1, ... (each block's tensors in their checkpoint order).
void put_in_block_order(Plan& plan) {
  std::stable_sort(plan.tensors.begin(), plan.tensors.end(), [](const TensorPlan& a, const TensorPlan& b) {
    return classify_tensor(a.name).layer < classify_tensor(b.name).layer;
  });
}

void add_sizes(Plan& plan) {
  for (auto& p : plan.tensors) {
    p.output_bytes = p.format->stored_bytes(p.logical_ne());
    plan.input_bytes += p.input_bytes;
    plan.tensor_bytes += p.output_bytes;
    plan.weights += p.numel();
    if (p.fallback) {
      ++plan.fallbacks;
      plan.fallback_bytes += p.output_bytes;
    }
  }
}

// The packed linears of a GPTQ / AWQ checkpoint, by the name of their qweight (their other parts are read through it).
std::map<std::string, PackedLinear> packed_linears(const Checkpoint& ckpt, const Plan& plan) {
  std::map<std::string, PackedLinear> packed;
  if (!plan.packed || plan.packed->kind == PackedKind::Bnb4) return packed;
  for (auto& l : find_packed_linears(ckpt, *plan.packed)) {
    std::string key = l.base + ".qweight";
    packed.emplace(std::move(key), std::move(l));
  }
  return packed;
}

// The 4-bit linears of a bitsandbytes checkpoint, by the name of their packed weight; warns that they are requantized.
std::map<std::string, std::shared_ptr<const Bnb4Linear>> bnb4_linears(const Checkpoint& ckpt, Plan& plan) {
  std::map<std::string, std::shared_ptr<const Bnb4Linear>> bnb4;
  if (!plan.packed || plan.packed->kind != PackedKind::Bnb4) return bnb4;
  for (auto& l : find_bnb4_linears(ckpt, *plan.packed)) {
    std::string key = l.base + ".weight";  // (before l is moved from)
    bnb4.emplace(std::move(key), std::make_shared<const Bnb4Linear>(std::move(l)));
  }
  if (!bnb4.empty())
    plan.config.warnings.push_back(fmt::format(
        "{}: {} bitsandbytes {} linears: NF4 / FP4 blocks have no llama.cpp type, so they are decoded and quantized "
        "again (to {}); the roundings compound",
        ckpt.source().string(), bnb4.size(), bnb4.begin()->second->quant_type, plan.config.target.name));
  return bnb4;
}

// A quantized checkpoint is converted, not calibrated again.
void check_packed_input(const Checkpoint& ckpt, const Plan& plan) {
  if (!plan.packed) return;
  if (!plan.model) throw InputError(plan.packed->file + ": a quantized checkpoint needs its architecture in config.json");
  if (plan.config.gptq || plan.config.awq)
    throw UsageError(fmt::format("--method {}: {} is already quantized ({}); convert it with round-to-nearest (the "
                                 "default), or quantize the float model it was made from",
                                 method_name(plan.config.method), ckpt.source().string(), plan.packed->name()));
}

// Every tensor of the checkpoint with its format: packed linears as the weights they stand for (their side parts
// dropped), 1-D and higher-rank tensors kept F32, 2-D weights by the target and the rules.
void plan_tensors(const Checkpoint& ckpt, const MixContext& ctx, Plan& plan) {
  const QuantizeConfig& cfg = plan.config;
  const auto packed = packed_linears(ckpt, plan);
  const auto bnb4 = bnb4_linears(ckpt, plan);
  for (const auto& e : ckpt.tensors()) {
    const std::string& name = e.tensor->name;
    std::optional<TensorPlan> p;
    if (!bnb4.empty() && is_bnb4_side_part(name)) continue;
    if (const auto it = bnb4.find(name); it != bnb4.end()) {
      if (!(p = bnb4_source(e, it->second, plan))) continue;
      choose_format(*p, cfg, ctx);
      apply_fallback(*p, cfg.rules.no_fallback);
      p->reason = fmt::format("bitsandbytes {}: decoded, then {}", it->second->quant_type, p->reason);
    } else if (plan.packed && plan.packed->kind != PackedKind::Bnb4 && is_packed_part(name)) {
      const auto linear = packed.find(name);
      if (linear == packed.end()) continue;  // (qzeros, scales, g_idx: read through their qweight)
      if (!(p = packed_source(linear->second, plan, plan.skipped))) continue;
      choose_packed_format(*p, cfg, ctx, plan.config.warnings);
    } else {
      if (!(p = source_of(e, plan, plan.skipped))) continue;
      if (p->shape.size() != 2) {
        p->format = format_for_ggml_type(GgmlType::F32);
        p->reason = p->shape.size() < 2 ? "1-D tensors (norms, biases) stay F32" : "tensors that are not 2-D stay F32";
      } else {
        choose_format(*p, cfg, ctx);
        apply_fallback(*p, cfg.rules.no_fallback);
      }
    }
    plan.tensors.push_back(std::move(*p));
  }
  if (plan.tensors.empty()) throw InputError(ckpt.source().string() + ": no tensor to write");
}

void warn_requantized(const Checkpoint& ckpt, Plan& plan) {
  const auto requantized = static_cast<size_t>(std::count_if(
      plan.tensors.begin(), plan.tensors.end(), [](const TensorPlan& t) { return t.source && t.source->tensor->ggml_type; }));
  if (!requantized) return;
  const bool one = requantized == 1;
  plan.config.warnings.push_back(fmt::format(
      "--allow-requantize: {} tensor{} of {} {} already quantized and {} decoded, then quantized again: the two "
      "roundings compound (start from the F16 / BF16 / F32 model where you can)",
      requantized, one ? "" : "s", ckpt.source().string(), one ? "is" : "are", one ? "is" : "are"));
}

// What the method needs beyond the tensors: a model to fold AWQ's scales into or to run on text, and calibration
// data (a dry run plans without it).
void check_method_inputs(const Checkpoint& ckpt, const Plan& plan, bool has_calib, bool from_text, bool plan_only) {
  const QuantizeConfig& cfg = plan.config;
  const std::string method = method_name(cfg.method);
  const std::string why_no_model = plan.model_unavailable.empty() ? "" : " (" + plan.model_unavailable + ")";
  if (cfg.awq && !plan.model)
    throw UsageError(fmt::format("--method {} folds its scales into the model's norms and linears: it needs a "
                                 "checkpoint with a config.json, or a GGUF, of a supported architecture ({}){}",
                                 method, ckpt.source().string(), why_no_model));
  if ((cfg.gptq || cfg.awq) && !has_calib && !from_text && !plan_only)
    throw UsageError(fmt::format("--method {} needs calibration data: --calib FILE (text or activations)", method));
  if (from_text && !plan.model)
    throw UsageError(fmt::format("calibration from text runs the model: it needs a checkpoint with a config.json, or "
                                 "a GGUF, of a supported architecture ({}){}",
                                 ckpt.source().string(), why_no_model));
}

// GPTQ's inputs per tensor: from the engine's pass over the text (tensors in block order), or from the activation
// file.
void attach_calibration_inputs(Plan& plan, const CalibrationSet* calib, const CalibrationUse* text_calib) {
  const QuantizeConfig& cfg = plan.config;
  if (text_calib) {
    if (cfg.gptq) attach_calibration(plan, nullptr, false);
    plan.calibration = *text_calib;
    put_in_block_order(plan);
  } else {
    if (cfg.gptq) attach_calibration(plan, calib, cfg.gptq->allow_missing_calib);
    if (calib && (cfg.gptq || cfg.awq)) describe_calibration(plan, *calib);
  }
  if (cfg.gptq || cfg.awq) search_embeddings(plan);
}

}  // namespace

Plan make_plan(const Checkpoint& ckpt, const QuantizeOptions& opts, const Imatrix* imatrix,
               const std::string& imatrix_file, const CalibrationSet* calib, bool plan_only,
               const CalibrationUse* text_calib) {
  Plan plan;
  plan.config = resolve_options(opts, {imatrix != nullptr, calib != nullptr || text_calib != nullptr});
  if (plan.config.target.mix) plan.file_type = plan.config.target.mix->file_type;
  read_model(ckpt, plan);
  check_packed_input(ckpt, plan);
  plan_tensors(ckpt, mix_context(ckpt, imatrix != nullptr), plan);
  warn_requantized(ckpt, plan);
  add_rope_freqs(plan);
  check_required_tensors(plan, ckpt);
  check_config_against_tensors(plan, ckpt);
  check_method_inputs(ckpt, plan, calib != nullptr, text_calib != nullptr, plan_only);
  attach_calibration_inputs(plan, calib, text_calib);
  if (imatrix) attach_importance(plan, *imatrix, imatrix_file);
  add_sizes(plan);
  return plan;
}

}  // namespace qz
