#include "qz/pipeline/quantize_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/formats/int_grid.hpp"
#include "qz/formats/nf4.hpp"

namespace qz {

namespace {

std::string known_types() {
  std::string s = "mixes ";
  for (const auto& m : mixes()) s += std::string(m.name) + " ";
  return s + "(Q3_K/Q4_K/Q5_K = their _M mix); formats " + known_format_names();
}

std::string spelling_name(TypeSpelling s) {
  switch (s) {
    case TypeSpelling::Absmax: return "absmax";
    case TypeSpelling::Zeropoint: return "zeropoint";
    case TypeSpelling::Nf4: return "nf4";
    case TypeSpelling::Fp4: return "fp4";
    case TypeSpelling::None: break;
  }
  return "";
}

IntGridSpec grid_spec(int bits, int group, bool symmetric) {
  IntGridSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  if (group > 0) {
    s.granularity = Granularity::Group;
    s.group = static_cast<size_t>(group);
  } else if (group == -1) {
    s.granularity = Granularity::Row;
  } else if (group == 0) {
    s.granularity = Granularity::Tensor;
  } else {
    throw UsageError(fmt::format("--group-size {}: use a positive group, -1 (per output row) or 0 (per tensor)", group));
  }
  validate_int_spec(s);
  return s;
}

std::string group_words(const IntGridSpec& s) {
  switch (s.granularity) {
    case Granularity::Group: return fmt::format("groups of {}", s.group);
    case Granularity::Row: return "one grid per row";
    case Granularity::Tensor: return "one grid per tensor";
  }
  return "";
}

// A single-format target for an integer grid. It is stored in llama.cpp's type when one holds the grid exactly
// (formats/int_grid.hpp); per-row and per-tensor grids only where the row length allows, so the sentence says both.
TargetConfig grid_target(const IntGridSpec& spec, const std::string& spelled) {
  TargetConfig t;
  t.format_name = t.name = int_format_name(spec);
  const std::string grid = fmt::format("{} {}-bit {} {}", spelled, spec.bits, spec.symmetric ? "symmetric" : "asymmetric",
                                       group_words(spec));
  if (spec.granularity == Granularity::Group) {
    const auto native = native_storage(spec, 0);
    if (native) t.stored_as = format_for_ggml_type(*native)->name();
    t.why = native ? fmt::format("{}: stored as llama.cpp's {} (each group's scale{} repeated in its {} block{} of 32)",
                                 grid, t.stored_as, spec.symmetric ? "" : " and min", spec.group / 32,
                                 spec.group == 32 ? "" : "s")
                   : fmt::format("{}: this tool's own layout (llama.cpp holds 4- and 5-bit grids and symmetric 8-bit "
                                 "ones in groups that are a multiple of 32)",
                                 grid);
  } else {
    const IntGridSpec blocks{spec.bits, spec.symmetric, Granularity::Group, 32};
    const auto native = native_storage(blocks, 0);
    if (native) t.stored_as = format_for_ggml_type(*native)->name();
    t.why = native ? fmt::format("{}: stored as llama.cpp's {} where the row length is a multiple of 32", grid, t.stored_as)
                   : fmt::format("{}: this tool's own layout", grid);
  }
  const int32_t group = spec.granularity == Granularity::Group ? static_cast<int32_t>(spec.group)
                        : spec.granularity == Granularity::Row   ? -1
                                                                 : 0;
  t.settings = {{"bits", static_cast<uint32_t>(spec.bits)}, {"group_size", group}, {"symmetric", spec.symmetric}};
  return t;
}

[[noreturn]] void fixed_by_type(const std::string& option, const std::string& type) {
  throw UsageError(fmt::format("{} does nothing with --type {}: the type fixes its own grid (drop one of them)",
                               option, type));
}

TargetConfig resolve_target(const QuantizeOptions& o) {
  const std::string bits_opt = o.bits ? fmt::format("--bits {}", *o.bits) : "";
  const std::string group_opt = o.group_size ? fmt::format("--group-size {}", *o.group_size) : "";
  const std::string sym_opt = o.symmetric ? (*o.symmetric ? "--sym" : "--asym") : "";
  if (o.spelling != TypeSpelling::None && !o.type.empty())
    throw UsageError(fmt::format("--type {} cannot be combined with --method {}: {} chooses its own storage from "
                                 "--bits / --group-size (or use --type alone)",
                                 o.type, spelling_name(o.spelling), spelling_name(o.spelling)));
  if (o.spelling == TypeSpelling::Nf4 || o.spelling == TypeSpelling::Fp4) {
    if (o.bits) throw UsageError(bits_opt + " does nothing with --method " + spelling_name(o.spelling) + ": its codes are 4-bit");
    if (o.symmetric) throw UsageError(sym_opt + " does nothing with --method " + spelling_name(o.spelling) + ": its code table is fixed");
    Nf4Options n;
    const int bs = o.group_size.value_or(64);
    if (bs <= 0) throw UsageError(fmt::format("--group-size {}: NF4/FP4 block sizes are positive", bs));
    n.blocksize = static_cast<size_t>(bs);
    n.double_quant = o.double_quant.value_or(true);
    n.fp4 = o.spelling == TypeSpelling::Fp4;
    validate_nf4_options(n);
    TargetConfig t;
    t.name = t.format_name = n.name();
    t.why = fmt::format("--method {}: bitsandbytes blocks of {}{}", spelling_name(o.spelling), n.blocksize,
                        n.double_quant ? ", double-quantized absmax" : "");
    t.settings = {{"group_size", static_cast<int32_t>(n.blocksize)}, {"double_quant", n.double_quant}};
    return t;
  }
  if (o.spelling == TypeSpelling::Absmax || o.spelling == TypeSpelling::Zeropoint) {
    if (o.symmetric)
      throw UsageError(fmt::format("{} does nothing with --method {}: {} is {}", sym_opt, spelling_name(o.spelling),
                                   spelling_name(o.spelling), o.spelling == TypeSpelling::Absmax ? "symmetric" : "asymmetric"));
    return grid_target(grid_spec(o.bits.value_or(4), o.group_size.value_or(128), o.spelling == TypeSpelling::Absmax),
                       "--method " + spelling_name(o.spelling));
  }
  if (!o.type.empty()) {
    if (o.bits) fixed_by_type(bits_opt, o.type);
    if (o.group_size) fixed_by_type(group_opt, o.type);
    if (o.symmetric) fixed_by_type(sym_opt, o.type);
    TargetConfig t;
    t.why = "--type " + o.type;
    if ((t.mix = find_mix(o.type))) {
      t.name = std::string(t.mix->name);
      return t;
    }
    const FormatPtr f = find_format(o.type, 256);
    if (!f) throw UsageError(fmt::format("--type {}: unknown type (known: {})", o.type, known_types()));
    t.name = t.format_name = f->name();
    if (const auto spec = parse_int_format_name(t.name)) t = grid_target(*spec, "--type " + t.name);
    return t;
  }
  if (o.method == Method::Rtn) {
    if (o.bits || o.group_size || o.symmetric)
      throw UsageError(fmt::format("{}: --method rtn rounds into a --type; an integer grid of --bits / --group-size "
                                   "is --method absmax (symmetric) or --method zeropoint (asymmetric)",
                                   !bits_opt.empty() ? bits_opt : !group_opt.empty() ? group_opt : sym_opt));
    TargetConfig t;
    t.mix = find_mix("Q8_0");
    t.name = "Q8_0";
    t.why = "--type Q8_0 (the default)";
    return t;
  }
  // gptq / awq without --type: an integer grid, asymmetric by default as in the GPTQ reference.
  return grid_target(grid_spec(o.bits.value_or(4), o.group_size.value_or(128), o.symmetric.value_or(false)),
                     "--method " + method_name(o.method));
}

}  // namespace

FormatPtr TargetConfig::format_for(size_t row_length) const {
  return format_name.empty() ? nullptr : find_format(format_name, row_length);
}

bool ImatrixFilter::uses(const std::string& name) const {
  auto has = [&](const std::vector<std::string>& parts) {
    return std::any_of(parts.begin(), parts.end(), [&](const std::string& p) { return name.find(p) != std::string::npos; });
  };
  if (!include.empty() && !has(include)) return false;
  return !has(exclude);
}

GgufKv parse_override_kv(const std::string& spec) {
  const size_t eq = spec.find('='), colon = eq == std::string::npos ? eq : spec.find(':', eq);
  if (eq == 0 || eq == std::string::npos || colon == std::string::npos)
    throw UsageError(fmt::format("--override-kv {}: expected KEY=TYPE:VALUE (TYPE int, float, bool or str), e.g. "
                                 "general.name=str:my-model",
                                 spec));
  const std::string key = spec.substr(0, eq), type = spec.substr(eq + 1, colon - eq - 1), value = spec.substr(colon + 1);
  if (key == "general.alignment")
    throw UsageError("--override-kv general.alignment: the writer sets the alignment (it decides every tensor's offset)");
  auto bad = [&](const char* what) {
    return UsageError(fmt::format("--override-kv {}: '{}' is not {}", spec, value, what));
  };
  try {
    size_t used = 0;
    if (type == "int") {
      const long long v = std::stoll(value, &used);
      if (used != value.size() || v < -0xFFFFFFFFLL || v > 0xFFFFFFFFLL) throw bad("a 32-bit integer");
      return {key, GgufValue(static_cast<uint32_t>(v < 0 ? -v : v))};
    }
    if (type == "float") {
      const float v = std::stof(value, &used);
      if (used != value.size() || !std::isfinite(v)) throw bad("a finite number");
      return {key, GgufValue(v)};
    }
  } catch (const std::logic_error&) {
    throw bad(type == "int" ? "a 32-bit integer" : "a finite number");
  }
  if (type == "bool") {
    if (value != "true" && value != "false") throw bad("true or false");
    return {key, GgufValue(value == "true")};
  }
  if (type == "str") {
    if (value.size() > 127) throw UsageError(fmt::format("--override-kv {}: strings are at most 127 bytes (as llama.cpp)", key));
    return {key, GgufValue(value)};
  }
  throw UsageError(fmt::format("--override-kv {}: unknown type '{}' (int, float, bool or str)", spec, type));
}

QuantizeConfig resolve_options(const QuantizeOptions& o, const ResolveContext& ctx) {
  QuantizeConfig c;
  c.method = o.method;
  c.allow_requantize = o.allow_requantize;
  for (const auto& kv : o.override_kv) c.metadata_overrides.push_back(parse_override_kv(kv));
  if (!o.split_max_size.empty()) c.split.max_bytes = parse_split_size(o.split_max_size);
  c.split.max_tensors = o.split_max_tensors;
  c.max_shard_bytes = parse_split_size(o.max_shard_size);
  c.threads = o.threads == 0 ? hardware_threads() : o.threads;
  c.target = resolve_target(o);
  auto warn = [&](const std::string& s) { c.warnings.push_back(s); };

  const FormatPtr single = c.target.format_for(256);
  const bool whole_tensor = single && single->whole_tensor();
  if (whole_tensor && c.method != Method::Rtn)
    throw UsageError(fmt::format("--method {} cannot target {}: NF4/FP4 blocks run across rows, and GPTQ and AWQ round "
                                 "rows of a row format (use --type Q4_K_M, Q4_0, int4_asym_g128, ...)",
                                 method_name(c.method), c.target.name));
  if (o.double_quant && !whole_tensor)
    warn(fmt::format("--{}double-quant is ignored: it applies to --method nf4 / fp4 only", *o.double_quant ? "" : "no-"));
  if (c.target.mix && c.target.mix->id == MixId::Q2_K_S && c.method == Method::Rtn && !ctx.has_imatrix)
    throw UsageError("--type Q2_K_S needs an importance matrix, as llama-quantize does (its Q2_K tensors are too "
                     "coarse without one): --imatrix FILE (`quantize imatrix MODEL --calib TEXT -o FILE` makes one), "
                     "or a calibrated method (--method gptq --calib FILE)");
  if (whole_tensor && ctx.has_imatrix)
    throw UsageError(fmt::format("--imatrix does nothing with {}: bitsandbytes' NF4/FP4 rounding has no importance "
                                 "weights (drop --imatrix)",
                                 c.target.name));

  // Per-tensor rules.
  c.rules.overrides = o.tensor_types;
  c.rules.output_type = o.output_tensor_type;
  c.rules.embedding_type = o.token_embedding_type;
  c.rules.leave_output = o.leave_output_tensor;
  c.rules.pure = o.pure;
  c.rules.no_fallback = o.no_fallback;
  for (const auto& t : o.tensor_types)
    if (!find_format(t.type, 256))
      throw UsageError(fmt::format("--tensor-type {}={}: unknown type (known: {})", t.pattern, t.type, known_format_names()));
  for (const auto& [opt, type] : {std::pair{"--output-tensor-type", o.output_tensor_type},
                                  std::pair{"--token-embedding-type", o.token_embedding_type}})
    if (!type.empty() && !find_format(type, 256))
      throw UsageError(fmt::format("{} {}: unknown type (known: {})", opt, type, known_format_names()));
  if (o.leave_output_tensor && !o.output_tensor_type.empty())
    throw UsageError("--leave-output-tensor and --output-tensor-type " + o.output_tensor_type +
                     " contradict each other: use one");
  if (o.pure && !c.target.mix) warn("--pure is ignored: it only changes llama-quantize mixes (--type Q4_K_M, ...)");

  // Imatrix filters, as llama-quantize's.
  if (!o.include_weights.empty() && !o.exclude_weights.empty())
    throw UsageError("--include-weights and --exclude-weights cannot be used together (as in llama-quantize)");
  c.imatrix = {o.include_weights, o.exclude_weights};
  if ((!o.include_weights.empty() || !o.exclude_weights.empty()) && !ctx.has_imatrix)
    warn(fmt::format("--{}-weights is ignored: it selects which tensors use --imatrix, and no imatrix is given",
                     o.include_weights.empty() ? "exclude" : "include"));

  // GPTQ.
  const bool gptq = uses_gptq(c.method), awq = uses_awq(c.method);
  if (gptq) {
    GptqSettings g;
    g.config.damp = o.damp.value_or(0.01);
    if (!(g.config.damp >= 0.0) || g.config.damp > 100.0)
      throw UsageError(fmt::format("--damp {}: use a value in [0, 100]", g.config.damp));
    const int bs = o.block_size.value_or(128);
    if (bs < 1) throw UsageError(fmt::format("--block-size {}: must be positive", bs));
    g.config.block_size = static_cast<size_t>(bs);
    g.config.act_order = o.act_order;
    g.config.static_groups = o.static_groups;
    g.config.weighted_fit = o.gptq_weighted_fit.value_or(true);
    g.config.refine_rounds = o.gptq_refine.value_or(2);
    if (g.config.refine_rounds < 0 || g.config.refine_rounds > 100)
      throw UsageError(fmt::format("--gptq-refine {}: use a count in [0, 100]", g.config.refine_rounds));
    g.compare_rtn = o.compare_rtn;
    g.allow_missing_calib = o.allow_missing_calib;
    c.gptq = g;
  } else {
    const std::string why = fmt::format("it applies to --method gptq and awq+gptq, not {}", method_name(c.method));
    if (o.damp) warn(fmt::format("--damp {} is ignored: {}", *o.damp, why));
    if (o.block_size) warn(fmt::format("--block-size {} is ignored: {}", *o.block_size, why));
    if (o.gptq_refine) warn(fmt::format("--gptq-refine {} is ignored: {}", *o.gptq_refine, why));
    if (o.act_order) warn("--act-order is ignored: " + why);
    if (o.static_groups) warn("--static-groups is ignored: " + why);
    if (o.compare_rtn) warn("--compare-rtn is ignored: " + why);
  }
  if (awq) {
    AwqSettings a;
    a.duo_scaling = o.awq_duo_scaling.value_or(c.method == Method::AwqGptq);
    a.tokens = o.awq_tokens.value_or(512);
    if (a.tokens < 1) throw UsageError("--awq-tokens must be positive");
    a.clip = o.awq_clip.value_or(c.method == Method::Awq);
    a.allow_missing_calib = o.allow_missing_calib;
    c.awq = a;
  } else {
    const std::string why = fmt::format("it applies to --method awq and awq+gptq, not {}", method_name(c.method));
    if (o.awq_duo_scaling) warn("--awq-duo-scaling is ignored: " + why);
    if (o.awq_tokens) warn(fmt::format("--awq-tokens {} is ignored: {}", *o.awq_tokens, why));
    if (o.awq_clip) warn(fmt::format("--{}awq-clip is ignored: {}", *o.awq_clip ? "" : "no-", why));
  }
  if (!gptq && !awq) {
    if (o.allow_missing_calib) warn("--allow-missing-calib is ignored: only gptq and awq use calibration data");
    if (ctx.has_calibration) warn("--calib is ignored: only --method gptq, awq and awq+gptq use calibration data");
  }
  return c;
}

}  // namespace qz
