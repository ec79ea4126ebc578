// `quantize`: the command-line front end. A thin shell: each subcommand's options are parsed into one pipeline
// request (qz/pipeline/commands.hpp), one pipeline function runs it, and the handler prints what it returns.
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "print.hpp"
#include "progress.hpp"
#include "qz/core/error.hpp"
#include "qz/pipeline/commands.hpp"

namespace {

using namespace qz;
namespace fs = std::filesystem;

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

struct Verbosity {
  bool quiet = false;
  int verbose = 0;
};

void add_verbosity(CLI::App& app, Verbosity& v) {
  app.add_flag("-v,--verbose", v.verbose, "More log output");
  app.add_flag("-q,--quiet", v.quiet, "Only errors");
}

// Binds an option to an optional<T>: set only when the user gives it, so the method's default applies otherwise.
template <typename T>
struct Optional {
  T value{};
  CLI::Option* opt = nullptr;
  std::optional<T> get() const { return opt->count() ? std::optional<T>(value) : std::nullopt; }
};

template <typename T>
void add(CLI::App& app, Optional<T>& o, const std::string& names, const std::string& help, const std::string& shown) {
  o.opt = app.add_option(names, o.value, help)->default_str(shown);
}

// A setting turned on by `on` and off by `off` (two flags, so --help shows each plainly); unset when neither is given.
struct Switch {
  CLI::Option* on = nullptr;
  CLI::Option* off = nullptr;
  std::optional<bool> get() const {
    if (on->count() && off->count())
      throw UsageError(on->get_name() + " and " + off->get_name() + " contradict each other: give one");
    if (on->count()) return true;
    if (off->count()) return false;
    return std::nullopt;
  }
};

Switch add_switch(CLI::App& app, const std::string& on, const std::string& off, const std::string& help_on,
                  const std::string& help_off, const std::string& group) {
  return {app.add_flag(on)->description(help_on)->group(group), app.add_flag(off)->description(help_off)->group(group)};
}

// ---- quantize INPUT... -o OUTPUT -------------------------------------------------------------------------------

struct QuantizeArgs {
  std::vector<std::string> inputs, calib, tensor_types, include_weights, exclude_weights;
  std::string output, json, method = "rtn", imatrix;
  Optional<int> bits, group_size, block_size;
  Optional<double> damp;
  Optional<size_t> awq_tokens;
  Switch symmetric, double_quant, awq_clip;
  CLI::Option* awq_duo = nullptr;
  QuantizeJob job;
};

void add_quantize_options(CLI::App& app, QuantizeArgs& a) {
  QuantizeOptions& o = a.job.options;
  app.add_option("input", a.inputs, "Checkpoint directory (with or without model.safetensors.index.json) or .safetensors file(s)");
  app.add_option("-o,--output", a.output, "Output GGUF file (a directory with --output-format bnb)");
  app.add_option("-m,--method", a.method,
                 "rtn (the --type's own rounding), gptq (error feedback, needs --calib), awq (activation-aware "
                 "scaling folded into the model, then rtn; needs --calib), awq+gptq; absmax / zeropoint / nf4 / fp4 "
                 "spell a storage type with --bits / --group-size and round to nearest")
      ->capture_default_str();
  app.add_option("--type", o.type, "A llama-quantize mix (Q4_K_M, Q8_0, ...) or any storage type below (default Q8_0)");

  const std::string storage = "Storage spelled by --method absmax/zeropoint/gptq/awq and nf4/fp4";
  add(app, a.bits, "-b,--bits", "Bits of the integer grid, 2..8", "4");
  a.bits.opt->group(storage);
  add(app, a.group_size, "-g,--group-size",
      "Integer grids: input columns per group (-1 per output row, 0 per tensor); NF4/FP4: block size", "128; nf4 64");
  a.group_size.opt->group(storage);
  a.symmetric = add_switch(app, "--sym", "--asym", "gptq/awq integer grids: symmetric (absmax)",
                           "gptq/awq integer grids: asymmetric (zero-point; the default)", storage);
  a.double_quant = add_switch(app, "--double-quant", "--no-double-quant",
                              "NF4/FP4: quantize the block absmax values again, 8-bit in blocks of 256 (the default)",
                              "NF4/FP4: keep the block absmax values as fp32", storage);

  const std::string calib = "Calibration (gptq, awq)";
  app.add_option("--calib", a.calib, "Calibration activations (safetensors, docs/calibration.md); repeat for several files")
      ->allow_extra_args(false)
      ->group(calib);
  app.add_flag("--allow-missing-calib", o.allow_missing_calib,
               "Round layers without calibration data to nearest (gptq) or leave them unscaled (awq) instead of failing")
      ->group(calib);

  const std::string gptq = "GPTQ (--method gptq, awq+gptq)";
  add(app, a.damp, "--damp", "Damping as a fraction of mean(diag H), raised step by step if needed", "0.01");
  a.damp.opt->group(gptq);
  add(app, a.block_size, "--block-size", "Lazy-batch width in columns", "128");
  a.block_size.opt->group(gptq);
  app.add_flag("--act-order", o.act_order, "Columns by decreasing Hessian diagonal (implies --static-groups); default off")->group(gptq);
  app.add_flag("--static-groups", o.static_groups, "Fit every block's grid up front on the original weights; default off")->group(gptq);
  app.add_flag("--compare-rtn", o.compare_rtn, "Also report round-to-nearest's output error on the calibration data")->group(gptq);

  const std::string awq = "AWQ (--method awq, awq+gptq)";
  a.awq_duo = app.add_flag("--awq-duo-scaling")
                  ->description("s = mean|x|^a / mean|w|^(1-a) instead of mean|x|^a; default off")
                  ->group(awq);
  add(app, a.awq_tokens, "--awq-tokens", "Calibration tokens (evenly strided) the searches measure output errors on", "512");
  a.awq_tokens.opt->group(awq);
  a.awq_clip = add_switch(app, "--awq-clip", "--no-awq-clip",
                          "Search per-group clipping bounds (the default for awq)",
                          "No clipping search (the default for awq+gptq)", awq);

  const std::string lq = "Per-tensor choices (as llama-quantize)";
  app.add_option("--tensor-type", a.tensor_types, "PATTERN=TYPE: tensors whose name matches the regex PATTERN get TYPE (repeatable; first match wins)")
      ->allow_extra_args(false)
      ->group(lq);
  app.add_option("--output-tensor-type", o.output_tensor_type, "Type of the output head (output.weight)")->group(lq);
  app.add_option("--token-embedding-type", o.token_embedding_type, "Type of the token embeddings (token_embd.weight)")->group(lq);
  app.add_flag("--leave-output-tensor", o.leave_output_tensor, "Keep the output head unquantized (its checkpoint float type)")->group(lq);
  app.add_flag("--pure", o.pure, "With a mix: every weight gets the mix's base type (no per-tensor choices)")->group(lq);
  app.add_flag("--no-fallback", o.no_fallback, "Fail instead of falling back when a row length does not fit the type")->group(lq);
  app.add_option("--imatrix", a.imatrix, "Importance matrix (llama.cpp's GGUF or legacy .dat imatrix) for weighted rounding")->group(lq);
  app.add_option("--include-weights", a.include_weights, "Use the imatrix only for tensors whose name contains this (repeatable)")
      ->allow_extra_args(false)
      ->group(lq);
  app.add_option("--exclude-weights", a.exclude_weights, "Do not use the imatrix for tensors whose name contains this (repeatable)")
      ->allow_extra_args(false)
      ->group(lq);

  app.add_option("--output-format", a.job.output_format,
                 "gguf, or bnb (with nf4/fp4: a transformers + bitsandbytes checkpoint directory at -o)")
      ->capture_default_str();
  app.add_option("-t,--threads", o.threads, "Worker threads (default: all cores)");
  app.add_option("--json", a.json, "Write the machine-readable report to FILE ('-': stdout, the human lines then go to stderr)");
  app.add_flag("--dry-run", a.job.dry_run, "Print the per-tensor plan and the output size; write nothing (no --calib needed)");
  app.add_flag("-f,--force", a.job.force, "Overwrite an existing output file");
}

void finish_quantize_args(QuantizeArgs& a) {
  QuantizeOptions& o = a.job.options;
  check_not_llama_quantize_form(a.inputs, !a.output.empty());
  set_method(o, a.method);
  o.bits = a.bits.get();
  o.group_size = a.group_size.get();
  o.symmetric = a.symmetric.get();
  o.double_quant = a.double_quant.get();
  o.damp = a.damp.get();
  o.block_size = a.block_size.get();
  o.awq_tokens = a.awq_tokens.get();
  o.awq_clip = a.awq_clip.get();
  if (a.awq_duo->count()) o.awq_duo_scaling = true;
  for (const auto& s : a.tensor_types) o.tensor_types.push_back(parse_tensor_type_override(s));
  o.include_weights = a.include_weights;
  o.exclude_weights = a.exclude_weights;
  a.job.inputs.assign(a.inputs.begin(), a.inputs.end());
  a.job.output = a.output;
  a.job.calib.assign(a.calib.begin(), a.calib.end());
  a.job.imatrix = a.imatrix;
}

int handle_quantize(QuantizeArgs& a, const Verbosity& v) {
  finish_quantize_args(a);
  // With --json - the report is the only thing on stdout.
  std::FILE* human = a.json == "-" ? stderr : stdout;
  cli::ConsoleProgress progress(stderr, isatty(STDERR_FILENO) != 0, v.quiet);
  QuantizeEvents ev;
  ev.warn = [](const std::string& s) { spdlog::warn("{}", s); };
  ev.planned = [&](const Plan& plan) {
    spdlog::debug("{} tensors, {} skipped", plan.tensors.size(), plan.skipped.size());
    if (a.job.dry_run && !v.quiet) cli::print_plan(human, plan);
  };
  ev.awq = cli::awq_progress(stderr, v.quiet, v.verbose > 0);
  ev.awq_done = [&](const AwqReport& r) {
    if (!v.quiet) fmt::print(stderr, "awq: searches took {:.2f} s\n", r.search_seconds);
  };
  ev.progress = &progress;
  const Report r = run_quantize(a.job, ev);
  if (!v.quiet) cli::print_summary(human, r, a.job.output_format);
  if (!a.json.empty()) cli::write_json(a.json, r);
  return 0;
}

// ---- the other subcommands ---------------------------------------------------------------------------------------

struct InspectArgs {
  std::string file;
};

int handle_inspect(const InspectArgs& a) {
  fmt::print("{}", inspect_gguf(a.file));
  return 0;
}

struct DequantizeArgs {
  std::string input, output, dtype = "f32";
  bool force = false;
};

int handle_dequantize(const DequantizeArgs& a, const Verbosity& v) {
  const size_t n = run_dequantize(a.input, a.output, a.dtype, a.force);
  if (!v.quiet)
    fmt::print("wrote {}: {} tensors as {}\n", a.output, n,
               fs::path(a.output).extension() == ".gguf" ? "F32 (metadata kept)" : a.dtype);
  return 0;
}

struct ImatrixArgs {
  std::string model, output;
  std::vector<std::string> calib;
  bool force = false;
};

int handle_imatrix(const ImatrixArgs& a, const Verbosity& v) {
  ImatrixJob job{a.model, {a.calib.begin(), a.calib.end()}, a.output, a.force};
  const ImatrixResult r = run_imatrix(job);
  for (const auto& name : r.missing) spdlog::warn("{}: no calibration activations", name);
  if (!v.quiet) fmt::print("wrote {}: {} entries from {} calibration file(s)\n", a.output, r.entries, a.calib.size());
  return 0;
}

struct DemoArgs {
  std::string dir;
  DemoConfig cfg;
};

int handle_make_demo(const DemoArgs& a, const Verbosity& v) {
  run_make_demo(a.dir, a.cfg);
  if (!v.quiet) fmt::print("wrote demo checkpoint and calibration activations (calib.safetensors) to {}\n", a.dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = spdlog::stderr_color_mt("quantize");
  spdlog::set_default_logger(log);
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"quantize: shrink LLM checkpoints (Hugging Face safetensors) into GGUF files.\n"
               "  quantize INPUT -o OUTPUT.gguf [--type Q4_K_M | --method gptq --bits 4 --calib F ...]\n"
               "  quantize inspect FILE.gguf | dequantize FILE.gguf -o OUT.safetensors | imatrix MODEL --calib F -o I.gguf\n"
               "  quantize make-demo DIR",
               "quantize"};
  app.set_version_flag("--version", std::string("quantize ") + QUANTIZE_VERSION);
  Verbosity verbosity;
  QuantizeArgs qa;
  add_quantize_options(app, qa);
  add_verbosity(app, verbosity);
  app.footer(cli::format_list());

  InspectArgs ia;
  auto* inspect = app.add_subcommand("inspect", "Print a GGUF file's metadata and tensor table");
  inspect->add_option("file", ia.file, "GGUF file")->required();

  DequantizeArgs da;
  auto* deq = app.add_subcommand("dequantize", "Decode a GGUF file written by quantize (or llama.cpp) back to floats");
  deq->add_option("file", da.input, "GGUF file")->required();
  deq->add_option("-o,--output", da.output, "Output .safetensors file, or .gguf for an all-F32 GGUF with the same metadata")->required();
  deq->add_option("--dtype", da.dtype, "f32, f16 or bf16 (safetensors output)")->capture_default_str();
  deq->add_flag("-f,--force", da.force, "Overwrite an existing output file");

  ImatrixArgs xa;
  auto* imx = app.add_subcommand("imatrix", "Compute an importance matrix (llama.cpp's GGUF imatrix) from calibration activations");
  imx->add_option("model", xa.model, "Checkpoint directory or .safetensors file")->required();
  imx->add_option("--calib", xa.calib, "Calibration safetensors file (docs/calibration.md); repeat for several")
      ->required()
      ->allow_extra_args(false);
  imx->add_option("-o,--output", xa.output, "Output imatrix .gguf")->required();
  imx->add_flag("-f,--force", xa.force, "Overwrite an existing output file");

  DemoArgs ma;
  auto* demo = app.add_subcommand("make-demo", "Write a tiny LLaMA-shaped demo checkpoint (config.json, 2 shards, index) and calib.safetensors");
  demo->add_option("dir", ma.dir, "Directory to write")->required();
  demo->add_option("--layers", ma.cfg.layers, "Decoder layers")->capture_default_str();
  demo->add_option("--seed", ma.cfg.seed, "Random seed")->capture_default_str();

  for (auto* sub : {inspect, deq, imx, demo}) {
    sub->footer("");  // the type list is the main command's
    add_verbosity(*sub, verbosity);
  }
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  spdlog::set_level(verbosity.quiet ? spdlog::level::err : (verbosity.verbose ? spdlog::level::debug : spdlog::level::info));

  try {
    if (*inspect) return handle_inspect(ia);
    if (*deq) return handle_dequantize(da, verbosity);
    if (*imx) return handle_imatrix(xa, verbosity);
    if (*demo) return handle_make_demo(ma, verbosity);
    return handle_quantize(qa, verbosity);
  } catch (const InputError& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  } catch (const UsageError& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitRuntime;
  }
}
