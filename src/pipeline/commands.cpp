#include "qz/pipeline/commands.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>

#include "qz/calibration/engine_statistics.hpp"
#include "qz/calibration/shared_hessians.hpp"
#include "qz/calibration/statistics.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/fault_cleanup.hpp"
#include "qz/io/gguf_split.hpp"
#include "qz/io/gguf_tensor_file.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/io/output_file.hpp"
#include "qz/model/text_tokenizer.hpp"
#include "qz/model/tokenizer.hpp"
#include "qz/core/parallel.hpp"
#include "qz/engine/model_weights.hpp"
#include "qz/pipeline/bnb_export.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/gptq_export.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/pipeline/mixes.hpp"

namespace qz {

namespace fs = std::filesystem;

namespace {

void warn(const QuantizeEvents& ev, const std::string& msg) {
  if (ev.warn) ev.warn(msg);
}

void report_plan_warnings(const Plan& plan, const QuantizeEvents& ev, const fs::path& output, bool gguf_output) {
  if (ev.note && gguf_output && !plan.config.target.stored_as.empty()) ev.note(plan.config.target.why);
  for (const auto& w : plan.config.warnings) warn(ev, w);
  for (const auto& name : plan.calibration_missing) warn(ev, name + ": no calibration data, rounded to nearest");
  if (plan.imatrix)
    for (const auto& name : plan.imatrix->missing) warn(ev, name + ": no imatrix entry, quantized without importance");
  for (const auto& t : plan.tensors)
    if (t.fallback) warn(ev, t.name + ": " + t.reason);
  const auto custom = std::find_if(plan.tensors.begin(), plan.tensors.end(),
                                   [](const TensorPlan& t) { return !t.format->llama_native(); });
  if (plan.model && custom != plan.tensors.end() && gguf_output)
    warn(ev, fmt::format("{} is not a llama.cpp type: llama.cpp will not load {}; `quantize dequantize` reads it (use "
                         "--type Q4_K_M, Q4_0, ... for llama.cpp)",
                         custom->format->name(), output.empty() ? std::string("the output") : output.string()));
}

// Whether the model reads BOS first, and which: the GGUF's tokenizer keys, or the checkpoint's configs.
std::optional<int32_t> model_bos(const fs::path& model) {
  if (is_gguf_file(model)) {
    const GgufFile g(model);
    const GgufValue* add = g.find("tokenizer.ggml.add_bos_token");
    const GgufValue* id = g.find("tokenizer.ggml.bos_token_id");
    const GgufValue* kind = g.find("tokenizer.ggml.model");
    const bool llama = kind && kind->get_if<std::string>() && *kind->get_if<std::string>() == "llama";
    const bool adds = add && add->get_if<bool>() ? *add->get_if<bool>() : llama;
    if (adds && id && id->get_if<uint32_t>()) return static_cast<int32_t>(*id->get_if<uint32_t>());
    return std::nullopt;
  }
  const fs::path dir = fs::is_directory(model) ? model : model.parent_path();
  const auto v = read_vocabulary(dir, "llama", 0);
  if (v && v->bos && v->add_bos.value_or(true)) return static_cast<int32_t>(*v->bos);
  return std::nullopt;
}


// The files a run reads: the inputs, and for a checkpoint directory the files in it that a checkpoint is read from.
std::vector<fs::path> files_read(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> out;
  for (const auto& in : inputs) {
    std::error_code ec;
    if (!fs::is_directory(in, ec)) {
      if (is_gguf_file(in)) {  // every part of a split GGUF
        const auto parts = gguf_split_parts(in);
        out.insert(out.end(), parts.begin(), parts.end());
      } else {
        out.push_back(in);
      }
      continue;
    }
    for (const auto& e : fs::directory_iterator(in, ec)) {
      const std::string ext = e.path().extension().string();
      if (ext == ".safetensors" || ext == ".json" || ext == ".model" || ext == ".md") out.push_back(e.path());
    }
  }
  return out;
}

// Before anything is read: an output that is a directory, not a regular file, exists without --force, or is one of
// the inputs (refused even with --force) is a usage error.
void check_output(const fs::path& output, bool force, const std::vector<fs::path>& inputs) {
  refuse_overwriting_inputs(output, files_read(inputs));
  check_output_path(output, force);
}

fs::path model_dir(const fs::path& input) { return fs::is_directory(input) ? input : input.parent_path(); }
// What the engine opens for an input: a GGUF file itself, else the checkpoint directory.
fs::path engine_model(const fs::path& input) { return is_gguf_file(input) ? input : model_dir(input); }

// Calibration from text: the windows the engine runs, drawn from every file's documents.
struct TextCalibration {
  CalibSamples samples;
  CalibrationUse use;
};

// Splits --calib into activation files and text files; a mix is a usage error.
bool calib_is_text(const std::vector<fs::path>& calib) {
  size_t text = 0;
  for (const auto& f : calib) text += is_text_calibration(f);
  if (text != 0 && text != calib.size())
    throw UsageError("--calib: give either activation files (.safetensors) or text files, not both");
  return text != 0;
}

// The tokenizer of a model: `explicit_dir`'s when given; a GGUF model's own SentencePiece vocabulary; else the
// tokenizer files of the checkpoint (or beside the GGUF).
std::unique_ptr<TextTokenizer> model_tokenizer(const fs::path& model, const fs::path& explicit_dir = {}) {
  if (!explicit_dir.empty()) return open_text_tokenizer(explicit_dir);
  const fs::path dir = model_dir(model);
  const bool files = fs::exists(dir / "tokenizer.model") || fs::exists(dir / "tokenizer.json");
  if (is_gguf_file(model)) {
    const GgufFile g(model);
    const GgufValue* kind = g.find("tokenizer.ggml.model");
    const bool llama = kind && kind->get_if<std::string>() && *kind->get_if<std::string>() == "llama";
    if (llama || !files) return open_gguf_tokenizer(model);
  }
  return open_text_tokenizer(dir);
}

// The tokenizer (when files of these kinds need one) and BOS of the model at `dir`.
std::optional<int32_t> bos_and_tokenizer(const fs::path& model, const std::vector<CalibKind>& kinds,
                                         std::unique_ptr<TextTokenizer>* tok) {
  bool needs = false;
  for (const CalibKind k : kinds) needs |= k != CalibKind::JsonTokens;
  const fs::path dir = model_dir(model);
  if (needs || fs::exists(dir / "tokenizer.model") || fs::exists(dir / "tokenizer.json")) *tok = model_tokenizer(model);
  if (*tok) return (*tok)->add_bos ? (*tok)->bos : std::nullopt;
  return model_bos(model);
}

std::vector<CalibKind> kinds_of(const std::vector<fs::path>& calib) {
  std::vector<CalibKind> kinds;
  for (const auto& f : calib) kinds.push_back(calibration_kind(f));
  return kinds;
}

TextCalibration read_text_calibration(const QuantizeJob& job, const ModelConfig& m) {
  const std::vector<CalibKind> kinds = kinds_of(job.calib);
  std::unique_ptr<TextTokenizer> tok;
  const std::optional<int32_t> bos = bos_and_tokenizer(job.inputs.front(), kinds, &tok);
  std::vector<std::vector<int32_t>> docs;
  TextCalibration t;
  t.use.kind = calib_kind_name(kinds.front());
  for (size_t i = 0; i < job.calib.size(); ++i) {
    auto d = read_calibration_documents(job.calib[i], kinds[i], tok.get(), bos, m.vocab_size);
    docs.insert(docs.end(), std::make_move_iterator(d.begin()), std::make_move_iterator(d.end()));
    t.use.files.push_back(job.calib[i].filename().string());
    if (kinds[i] != kinds.front()) t.use.kind = "mixed text";
  }
  t.samples = draw_calibration_samples(docs, bos, job.sampling);
  for (const auto& s : t.samples.sequences)
    for (const int32_t id : s)
      if (id < 0 || static_cast<uint32_t>(id) >= m.vocab_size)
        throw InputError(fmt::format("calibration token id {} is outside the model's vocabulary of {} (is the "
                                     "tokenizer the model's?)", id, m.vocab_size));
  t.use.tokens = t.samples.tokens();
  t.use.windows = t.samples.sequences.size();
  t.use.block_by_block = !job.calib_float_inputs;
  t.use.warning = t.samples.warning;
  return t;
}

BlockInput block_input_of(TensorRole r) {
  switch (r) {
    case TensorRole::AttnOutput: return BlockInput::AttnOutput;
    case TensorRole::FfnGate:
    case TensorRole::FfnUp: return BlockInput::FfnGateUp;
    case TensorRole::FfnDown: return BlockInput::FfnDown;
    default: return BlockInput::AttnQkv;
  }
}

}  // namespace

class SharedCalibration {
 public:
  SharedCalibration(const QuantizeJob& first, size_t outputs) : key(shared_calibration_key(first)) {
    if (key.empty()) throw std::logic_error("open_shared_calibration: the job cannot share its calibration");
    weights = ModelWeights::open(engine_model(first.inputs.front()));
    text = read_text_calibration(first, weights->config());
    text.use.shared_by = outputs;
    BlockByBlockOptions o;
    o.threads = resolve_options(first.options, {!first.imatrix.empty(), true}).threads;
    o.float_inputs = true;
    o.bf16_states = first.calib_bf16_states;
    hessians = std::make_unique<SharedHessians>(*weights, text.samples.sequences, o, outputs);
  }
  const std::string key;
  std::unique_ptr<ModelWeights> weights;
  TextCalibration text;
  std::unique_ptr<SharedHessians> hessians;
};

std::string shared_calibration_key(const QuantizeJob& job) {
  try {
    if (job.dry_run || job.inputs.empty() || job.calib.empty() || !job.calib_float_inputs || !calib_is_text(job.calib) ||
        (job.output_format != "gguf" && job.output_format != "gptq"))
      return "";
    const QuantizeConfig cfg = resolve_options(job.options, {!job.imatrix.empty(), true});
    if (!cfg.gptq || cfg.awq) return "";
    nlohmann::json k = {{"model", fs::absolute(job.inputs.front()).lexically_normal().string()},
                        {"samples", job.sampling.samples},
                        {"seqlen", job.sampling.seqlen},
                        {"seed", job.sampling.seed},
                        {"bf16_states", job.calib_bf16_states}};
    for (const auto& c : job.calib) k["calib"].push_back(fs::absolute(c).lexically_normal().string());
    return k.dump();
  } catch (const std::exception&) {
    return "";  // the job's own run says what is wrong with it
  }
}

std::shared_ptr<SharedCalibration> open_shared_calibration(const QuantizeJob& first, size_t outputs) {
  return std::make_shared<SharedCalibration>(first, outputs);
}

void install_fault_handlers_for_cli() { install_fault_handlers(); }

void check_not_llama_quantize_form(const std::vector<std::string>& inputs, bool has_output) {
  auto is_type = [](const std::string& a) { return find_mix(a) != nullptr || find_format(a, 256) != nullptr; };
  for (size_t i = 1; i < inputs.size(); ++i) {
    const std::string& a = inputs[i];
    std::error_code ec;
    if (fs::exists(a, ec) || !(is_type(a) || (!has_output && a.ends_with(".gguf")))) continue;
    // llama-quantize: IN OUT TYPE [THREADS]
    std::string hint = "quantize IN -o OUT.gguf --type TYPE [-t THREADS]";
    if (inputs.size() >= 3 && is_type(inputs[2]))
      hint = fmt::format("quantize {} -o {} --type {}{}", inputs[0], inputs[1], inputs[2],
                         inputs.size() >= 4 ? " -t " + inputs[3] : "");
    throw UsageError(fmt::format("'{}' is not an input file: this looks like llama-quantize's positional form "
                                 "(IN OUT TYPE [THREADS]); here the output is -o and the type --type: {}",
                                 a, hint));
  }
}

Report run_quantize(const QuantizeJob& job, const QuantizeEvents& ev) {
  // However this run ends, the outputs sharing its calibration capture stop waiting for it.
  struct LeaveShared {
    const QuantizeJob& job;
    ~LeaveShared() {
      if (job.shared_calibration) job.shared_calibration->hessians->leave(job.shared_index);
    }
  } leave_shared{job};
  if (job.shared_calibration && shared_calibration_key(job) != job.shared_calibration->key)
    throw std::logic_error("run_quantize: a job given a calibration capture it cannot share");
  if (job.inputs.empty()) throw UsageError("no INPUT given (a checkpoint directory or .safetensors file); see --help");
  if (job.output.empty() && !job.dry_run) throw UsageError("no output given: -o OUTPUT.gguf");
  if (job.output_format != "gguf" && job.output_format != "bnb" && job.output_format != "gptq")
    throw UsageError("--output-format " + job.output_format + ": use gguf, gptq or bnb");
  if (!job.output.empty() && !job.dry_run && job.output_format == "gguf") {
    std::vector<fs::path> inputs = job.inputs;
    inputs.insert(inputs.end(), job.calib.begin(), job.calib.end());
    if (!job.imatrix.empty()) inputs.push_back(job.imatrix);
    check_output(job.output, job.force, inputs);
  }
  // Options are checked before any file is read.
  const QuantizeConfig cfg = resolve_options(job.options, {!job.imatrix.empty(), !job.calib.empty()});

  const Checkpoint ckpt = Checkpoint::open_files(job.inputs);
  if (job.output_format != "gguf" && !job.dry_run)
    for (const auto& in : job.inputs)
      if (same_file(in, job.output) || same_file(in.parent_path().empty() ? fs::path(".") : in.parent_path(), job.output))
        throw UsageError(fmt::format("{}: the output directory holds the input {}: refusing to write over a checkpoint "
                                     "(--force or not); choose another -o",
                                     job.output.string(), in.string()));
  if (job.output_format == "bnb") {
    if (job.dry_run) throw UsageError("--dry-run is not available with --output-format bnb");
    for (const auto& w : cfg.warnings) warn(ev, w);
    return export_bnb(ckpt, cfg, job.output, job.force);
  }
  std::optional<Imatrix> imatrix;
  if (!job.imatrix.empty()) imatrix = read_imatrix(job.imatrix);
  const bool text = !job.calib.empty() && calib_is_text(job.calib);
  std::optional<CalibrationSet> calib;
  std::unique_ptr<ModelWeights> own_weights;  // the model the engine runs, for calibration text
  std::optional<TextCalibration> own_tc;
  const ModelWeights* weights = nullptr;
  const TextCalibration* tc = nullptr;
  if (!job.calib.empty() && !text) calib.emplace(job.calib);
  if (text && (cfg.gptq || cfg.awq)) {
    if (job.shared_calibration) {
      weights = job.shared_calibration->weights.get();
      tc = &job.shared_calibration->text;
    } else {
      own_weights = ModelWeights::open(engine_model(job.inputs.front()));
      own_tc = read_text_calibration(job, own_weights->config());
      weights = own_weights.get();
      tc = &*own_tc;
    }
    if (!tc->use.warning.empty()) warn(ev, tc->use.warning);
  } else if (text) {
    warn(ev, "--calib: round-to-nearest reads no calibration; the text is not used");
  }
  Plan plan = make_plan(ckpt, job.options, imatrix ? &*imatrix : nullptr, job.imatrix.string(),
                        calib ? &*calib : nullptr, job.dry_run, tc ? &tc->use : nullptr);
  report_plan_warnings(plan, ev, job.output, job.output_format == "gguf");
  if (ev.planned) ev.planned(plan);
  if (job.dry_run) return report_from_plan(plan, ckpt.source().string(), job.output.string());

  std::optional<AwqReport> awq;
  if (plan.config.awq) {
    if (tc) {
      EngineAwqActivations acts(*weights, tc->samples.sequences, plan.config.awq->tokens, plan.config.threads);
      awq = apply_awq(
          plan,
          [&](const TensorPlan& first, size_t) -> std::optional<AwqActivations> {
            const TensorRoleInfo r = classify_tensor(first.name);
            return acts.get(static_cast<uint32_t>(r.layer), block_input_of(r.role));
          },
          ev.awq,
          [&](const std::vector<TensorPlan*>& linears) -> AwqModuleLoss {
            if (job.awq_linear_objective || linears.empty()) return {};
            const TensorRoleInfo r = classify_tensor(linears.front()->name);
            std::vector<std::string> names;
            for (const TensorPlan* t : linears) names.push_back(t->name);
            return acts.module_loss(static_cast<uint32_t>(r.layer), block_input_of(r.role), names);
          });
    } else {
      awq = apply_awq(plan, *calib, ev.awq);
    }
    for (const auto& g : awq->groups)
      if (g.fell_back)
        warn(ev, fmt::format("AWQ: {} -> {}: the search's losses were not finite; that group keeps s = 1", g.prev,
                             fmt::join(g.linears, ",")));
    if (ev.awq_done) ev.awq_done(*awq);
  }
  std::unique_ptr<TensorProducer> blocks;
  if (tc && plan.config.gptq && job.shared_calibration) {
    blocks = std::make_unique<SharedHessianQuantizer>(plan, *job.shared_calibration->hessians, job.shared_index);
  } else if (tc && plan.config.gptq) {
    BlockByBlockOptions o;
    o.threads = plan.config.threads;
    o.float_inputs = job.calib_float_inputs;
    o.bf16_states = job.calib_bf16_states;
    blocks = std::make_unique<BlockQuantizer>(plan, *weights, tc->samples.sequences, o, ev.block);
  }
  Report r;
  if (job.output_format == "gptq") {
    const auto sink = make_gptq_checkpoint_sink(ckpt, plan, job.output, job.force, [&](const std::string& w) { warn(ev, w); });
    r = quantize_into(ckpt, plan, *sink, ev.progress, blocks.get());
  } else {
    r = quantize_to_gguf(ckpt, plan, job.output, job.force, ev.progress, blocks.get());
  }
  if (awq) {
    r.awq = awq;
    r.wall_seconds += awq->search_seconds;
  }
  return r;
}

std::string describe_storage_types() {
  std::string s = "Mixes (--type), as llama-quantize: ";
  for (const auto& m : mixes()) s += std::string(m.name) + " ";
  s += "(Q3_K, Q4_K, Q5_K = the _M mixes)\nStorage types (--type for one type everywhere, --tensor-type, "
       "--output-tensor-type, --token-embedding-type):\n";
  for (const auto& e : format_table()) {
    if (e.family())
      s += fmt::format("  {}\n      {}\n", e.name, e.summary);
    else
      s += fmt::format("  {:<8} {:6.3f} bpw  {}\n", e.name, e.bits_per_weight, e.summary);
  }
  return s;
}

std::string inspect_gguf(const fs::path& file) { return describe_gguf(GgufFile(file)); }

size_t run_dequantize(const fs::path& input, const fs::path& output, const std::string& dtype, bool force) {
  check_output(output, force, {input});
  if (output.extension() == ".gguf") return dequantize_gguf_to_gguf(input, output, force);
  DType dt = DType::F32;
  if (dtype == "f16") dt = DType::F16;
  else if (dtype == "bf16") dt = DType::BF16;
  else if (dtype != "f32") throw UsageError("--dtype " + dtype + ": use f32, f16 or bf16");
  return dequantize_gguf(input, output, dt, force);
}

ImatrixResult run_imatrix(const ImatrixJob& job) {
  {
    std::vector<fs::path> inputs = job.calib;
    inputs.push_back(job.model);
    check_output(job.output, job.force, inputs);
  }
  if (job.calib.empty()) throw UsageError("imatrix needs calibration: --calib FILE (text or activations)");
  ImatrixResult r;
  Imatrix m;
  if (calib_is_text(job.calib)) {
    if (job.calib.size() != 1) throw UsageError("imatrix reads one calibration text (as llama-imatrix's -f)");
    const auto weights = ModelWeights::open(engine_model(job.model));
    std::unique_ptr<TextTokenizer> tok;
    const std::vector<CalibKind> kinds = kinds_of(job.calib);
    const std::optional<int32_t> bos = bos_and_tokenizer(job.model, kinds, &tok);
    // The text tokenized once, BOS first, as llama-imatrix reads -f.
    std::vector<int32_t> stream;
    if (bos) stream.push_back(*bos);
    for (auto& d : read_calibration_documents(job.calib.front(), kinds.front(), tok.get(), bos, weights->config().vocab_size))
      stream.insert(stream.end(), d.begin(), d.end());
    const auto windows = imatrix_chunks(stream, job.ctx, job.chunks, bos);
    m = imatrix_from_windows(*weights, windows, job.threads ? job.threads : hardware_threads(), job.progress);
    r.chunks = windows.size();
    r.tokens = stream.size();
  } else {
    const Checkpoint model = Checkpoint::open(job.model);
    const CalibrationSet calib(job.calib);
    m = compute_imatrix(model, calib, &r.missing);
  }
  for (const auto& c : job.calib) m.datasets.push_back(c.filename().string());
  if (m.tensors.empty()) throw InputError("no weight of " + job.model.string() + " has calibration activations");
  write_imatrix_gguf(job.output, m, job.force);
  r.entries = m.tensors.size();
  return r;
}

TokenizeResult run_tokenize(const fs::path& model, const fs::path& text_file) {
  std::ifstream f(text_file, std::ios::binary);
  if (!f) throw InputError(text_file.string() + ": cannot read the text");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto tok = model_tokenizer(model);
  TokenizeResult r;
  r.ids = tok->encode_for_model(text);
  for (const int32_t id : r.ids) r.pieces.push_back(tok->piece(id));
  return r;
}

namespace {

std::vector<int32_t> read_token_file(const fs::path& f) {
  std::ifstream in(f, std::ios::binary);
  if (!in) throw InputError(f.string() + ": cannot read the tokens");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids;
  if (f.extension() == ".u32") {
    if (bytes.size() % 4) throw InputError(f.string() + ": a .u32 token file holds 4 bytes per token");
    ids.resize(bytes.size() / 4);
    std::memcpy(ids.data(), bytes.data(), bytes.size());
    return ids;
  }
  try {
    const auto list = nlohmann::json::parse(bytes);
    if (!list.is_array()) throw InputError(fmt::format("{}: expected a JSON list of token ids, not {}", f.string(), list.type_name()));
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_number_integer() || list[i].get<int64_t>() < 0 || list[i].get<int64_t>() > INT32_MAX)
        throw InputError(fmt::format("{}: element {} ({}) is not a token id", f.string(), i, list[i].dump()));
      ids.push_back(list[i].get<int32_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("{}: expected a JSON list of token ids: {}", f.string(), e.what()));
  }
  return ids;
}

}  // namespace

EvalResult run_eval(const EvalJob& job, const std::function<void(size_t, size_t, double)>& progress) {
  if (job.text.empty() == job.tokens.empty()) throw UsageError("give the evaluation text: --text FILE or --tokens FILE");
  const auto weights = ModelWeights::open(job.model);
  std::unique_ptr<ModelWeights> base_weights;
  if (!job.base.empty()) base_weights = ModelWeights::open(job.base);
  const unsigned threads = job.threads ? job.threads : hardware_threads();
  const ModelConfig& m = weights->config();
  if (m.context_length && job.ctx > m.context_length)
    throw UsageError(fmt::format("--ctx {} is longer than the model's context of {} tokens", job.ctx, m.context_length));
  std::vector<int32_t> tokens;
  if (!job.tokens.empty()) {
    tokens = read_token_file(job.tokens);
  } else {
    std::ifstream f(job.text, std::ios::binary);
    if (!f) throw InputError(job.text.string() + ": cannot read the text");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama-perplexity reads -f
    tokens = model_tokenizer(job.model, job.tokenizer)->encode_for_model(text);
  }
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || static_cast<uint32_t>(tokens[i]) >= m.vocab_size)
      throw InputError(fmt::format("{}: token {}: id {} is outside the model's vocabulary of {}",
                                   job.tokens.empty() ? job.text.string() : job.tokens.string(), i, tokens[i], m.vocab_size));
  const Transformer model(*weights, threads);
  std::optional<Transformer> base;
  if (base_weights) base.emplace(*base_weights, threads);
  PerplexityOptions o;
  o.ctx = job.ctx;
  o.max_chunks = job.chunks;
  o.bos = model_bos(job.model);
  const auto t0 = std::chrono::steady_clock::now();
  EvalResult r;
  r.ppl = perplexity(model, tokens, o, base ? &*base : nullptr, progress);
  r.tokens = tokens.size();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_second = r.seconds > 0 ? static_cast<double>(r.ppl.chunks * job.ctx) * (base ? 2.0 : 1.0) / r.seconds : 0.0;
  return r;
}

nlohmann::json to_json(const EvalJob& job, const EvalResult& r) {
  nlohmann::json j = {{"model", job.model.string()},   {"tokens", r.tokens},         {"ctx", job.ctx},
                      {"chunks", r.ppl.chunks},        {"scored", r.ppl.scored},     {"ppl", r.ppl.ppl},
                      {"ppl_error", r.ppl.ppl_error},  {"running_ppl", r.ppl.running_ppl},
                      {"seconds", r.seconds},          {"tokens_per_second", r.tokens_per_second}};
  if (r.ppl.kl)
    j["kl"] = {{"base", job.base.string()},
               {"mean", r.ppl.kl->mean},
               {"p99", r.ppl.kl->p99},
               {"max", r.ppl.kl->max},
               {"top1_agreement", r.ppl.kl->top1_agreement},
               {"base_ppl", r.ppl.kl->base_ppl}};
  return j;
}

void run_make_demo(const fs::path& dir, const DemoConfig& cfg) {
  write_demo_checkpoint(dir, cfg);
  write_demo_calibration(dir / "calib.safetensors", cfg);
  write_demo_calibration_text(dir / "calib.txt");
}

}  // namespace qz
