// `quantize`: the command-line front end. A thin layer: it parses options, calls the library, prints results.
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.
#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "progress.hpp"
#include "qz/core/error.hpp"
#include "qz/formats/format_table.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/pipeline/awq_pass.hpp"
#include "qz/pipeline/bnb_export.hpp"
#include "qz/pipeline/dequantize.hpp"
#include "qz/pipeline/importance.hpp"
#include "qz/pipeline/mixes.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"

namespace {

using namespace qz;
namespace fs = std::filesystem;

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string shape_string(const std::vector<uint64_t>& s) { return fmt::format("{}", fmt::join(s, "x")); }

void print_plan(const Plan& plan) {
  fmt::print("{:<44} {:<12} {:<18} {:>12}  {}\n", "tensor", "shape", "type", "bytes", "why");
  for (const auto& t : plan.tensors)
    fmt::print("{:<44} {:<12} {:<18} {:>12}  {}{}\n", t.name, shape_string(t.shape), t.format->name(), t.output_bytes,
               t.reason, t.name == t.source_name() ? "" : " [" + t.source_name() + "]");
  for (const auto& s : plan.skipped) fmt::print("{:<44} skipped: {}\n", s.name, s.reason);
}

void print_totals(const Report& r, const Plan& plan) {
  fmt::print("{} tensors: {} -> {} ({:.3f} bits per weight)", r.tensors.size(), human_bytes(r.input_bytes),
             human_bytes(r.output_bytes), r.bits_per_weight());
  if (!r.dry_run) {
    ErrorStats all;
    for (const auto& t : r.tensors)
      if (plan.tensors[&t - r.tensors.data()].format->is_quantized()) all.merge(t.error);
    if (const auto sqnr = all.sqnr_db()) fmt::print(", quantized weights SQNR {:.2f} dB", *sqnr);
    double out_err = 0, rtn_err = 0;
    size_t n_gptq = 0, n_rtn = 0;
    for (const auto& t : r.tensors) {
      if (!t.gptq) continue;
      out_err += t.gptq->output_rel_error;
      ++n_gptq;
      if (t.gptq->rtn_output_rel_error) {
        rtn_err += *t.gptq->rtn_output_rel_error;
        ++n_rtn;
      }
    }
    if (n_gptq) fmt::print(", GPTQ mean relative output error {:.3e}", out_err / static_cast<double>(n_gptq));
    if (n_rtn) fmt::print(" (round-to-nearest {:.3e})", rtn_err / static_cast<double>(n_rtn));
    fmt::print(", {:.2f} s on {} threads, peak memory {}", r.wall_seconds, r.threads,
               human_bytes(r.peak_memory_bytes));
  }
  fmt::print("\n");
  if (r.fallbacks > 0)
    fmt::print("{} tensors ({}) fell back to another type because of their row length\n", r.fallbacks,
               human_bytes(r.fallback_bytes));
}

void write_json(const std::string& path, const Report& r) {
  const std::string text = r.to_json().dump(2) + "\n";
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream f(path);
  if (!f) throw UsageError("--json " + path + ": cannot open for writing");
  f << text;
  if (!f) throw std::runtime_error("--json " + path + ": write failed");
}

std::string format_list() {
  std::string s = "Mixes (--type), as llama-quantize: ";
  for (const auto& m : mixes()) s += std::string(m.name) + " ";
  s += "(Q3_K, Q4_K, Q5_K = the _M mixes)\nStorage types (--tensor-type, and --type for one type everywhere):\n";
  for (const auto& e : format_table())
    s += fmt::format("  {:<8} {:6.3f} bpw  {}\n", e.name, e.bits_per_weight(), e.summary);
  s += "  int<B>_<sym|asym>_<g<N>|row|tensor>  integer grids of 2..8 bits (the project's layout, docs/formats.md)\n";
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = spdlog::stderr_color_mt("quantize");
  spdlog::set_default_logger(log);
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"quantize: shrink LLM checkpoints (Hugging Face safetensors) into GGUF files.\n"
               "  quantize [options] INPUT -o OUTPUT.gguf\n"
               "  quantize inspect FILE.gguf | dequantize FILE.gguf -o OUT.safetensors | imatrix MODEL --calib F -o I.gguf\n"
               "  quantize make-demo DIR",
               "quantize"};
  app.footer(format_list());
  app.set_version_flag("--version", std::string("quantize ") + QUANTIZE_VERSION);

  std::vector<std::string> inputs;
  std::string output, json_path, method = "rtn", type;
  QuantizeOptions opts;
  std::vector<std::string> tensor_types;
  bool dry_run = false, force = false, quiet = false;
  int verbose = 0;

  app.add_option("input", inputs, "Checkpoint directory (with or without model.safetensors.index.json) or .safetensors file(s)");
  app.add_option("-o,--output", output, "Output GGUF file");
  app.add_option("-m,--method", method, "Method: rtn (the --type's own quantizer), absmax (symmetric integer grid), zeropoint (asymmetric integer grid), gptq (error feedback, needs --calib), awq (activation-aware scaling folded into the model, then RTN; needs --calib), awq+gptq (AWQ scaling, then GPTQ), nf4 / fp4 (bitsandbytes blocks)")
      ->capture_default_str();
  std::vector<std::string> calib_files;
  app.add_option("--calib", calib_files, "Calibration activations (safetensors, docs/calibration.md); several accumulate");
  app.add_option("--damp", opts.damp, "GPTQ: damping as a fraction of mean(diag H), raised step by step if needed")->capture_default_str();
  app.add_option("--block-size", opts.block_size, "GPTQ: lazy-batch width in columns")->capture_default_str();
  app.add_flag("--act-order", opts.act_order, "GPTQ: columns by decreasing Hessian diagonal (implies --static-groups)");
  app.add_flag("--static-groups", opts.static_groups, "GPTQ: fit every block's grid up front on the original weights");
  app.add_flag("--sym,!--asym", opts.symmetric, "GPTQ integer grids: symmetric (absmax) or asymmetric (zero-point, default)");
  app.add_flag("--allow-missing-calib", opts.allow_missing_calib, "GPTQ: round layers without calibration data to nearest instead of failing");
  app.add_flag("--compare-rtn", opts.compare_rtn, "GPTQ: also report round-to-nearest's output error on the calibration data");
  app.add_flag("--awq-duo-scaling", opts.awq_duo_scaling, "AWQ: s = mean|x|^a / mean|w|^(1-a) instead of mean|x|^a");
  app.add_option("--awq-tokens", opts.awq_tokens, "AWQ: calibration tokens (evenly strided) the searches measure output errors on")
      ->capture_default_str();
  bool awq_clip = true;
  auto* awq_clip_opt = app.add_flag("--awq-clip,!--no-awq-clip", awq_clip,
                                    "AWQ: search per-group clipping bounds (default on for awq, off for awq+gptq)");
  app.add_option("--type", type, "A llama-quantize mix (Q4_K_M, Q8_0, ...) or an integer grid name; default Q8_0");
  app.add_option("-b,--bits", opts.bits, "Bits per weight of the absmax/zeropoint grid, 2..8")->capture_default_str();
  auto* group_opt = app.add_option("-g,--group-size", opts.group_size,
                                    "Input columns per absmax/zeropoint/GPTQ group (-1 per output row, 0 per tensor); "
                                    "NF4/FP4 block size (default 64)")
                        ->capture_default_str();
  app.add_flag("--double-quant,!--no-double-quant", opts.double_quant,
               "NF4/FP4: quantize the block absmax values again (8-bit, blocks of 256; default on)");
  app.add_option("--tensor-type", tensor_types, "PATTERN=TYPE: store tensors whose name matches the regex PATTERN as TYPE (repeatable; first match wins)");
  std::string imatrix_path, output_format = "gguf";
  app.add_option("--output-format", output_format, "gguf, or bnb (with nf4/fp4: a transformers + bitsandbytes checkpoint directory at -o)")
      ->capture_default_str();
  app.add_option("--imatrix", imatrix_path, "Importance matrix (llama.cpp's GGUF or legacy .dat imatrix) for weighted rounding");
  app.add_flag("--pure", opts.pure, "With a mix: give every weight the mix's base type (no per-tensor choices)");
  app.add_flag("--no-fallback", opts.no_fallback, "Fail instead of falling back when a row length does not fit the type");
  app.add_option("-t,--threads", opts.threads, "Worker threads (default: all cores)");
  app.add_option("--json", json_path, "Write the machine-readable report to FILE ('-' for stdout)");
  app.add_flag("--dry-run", dry_run, "Print the per-tensor plan and the output size; write nothing");
  app.add_flag("-f,--force", force, "Overwrite an existing output file");
  app.add_flag("-v,--verbose", verbose, "More log output");
  app.add_flag("-q,--quiet", quiet, "Only errors");

  auto* inspect = app.add_subcommand("inspect", "Print a GGUF file's metadata and tensor table");
  std::string inspect_path;
  inspect->add_option("file", inspect_path, "GGUF file")->required();

  auto* deq = app.add_subcommand("dequantize", "Decode a GGUF file written by quantize (or llama.cpp) back to safetensors");
  std::string deq_in, deq_out, deq_dtype = "f32";
  bool deq_force = false;
  deq->add_option("file", deq_in, "GGUF file")->required();
  deq->add_option("-o,--output", deq_out, "Output .safetensors file, or .gguf for an all-F32 GGUF with the same metadata")->required();
  deq->add_option("--dtype", deq_dtype, "f32, f16 or bf16")->capture_default_str();
  deq->add_flag("-f,--force", deq_force, "Overwrite an existing output file");

  auto* imx = app.add_subcommand("imatrix", "Compute an importance matrix (llama.cpp's GGUF imatrix) from calibration activations");
  std::string imx_model, imx_out;
  std::vector<std::string> imx_calib;
  bool imx_force = false;
  imx->add_option("model", imx_model, "Checkpoint directory or .safetensors file")->required();
  imx->add_option("--calib", imx_calib, "Calibration safetensors file(s) (docs/calibration.md)")->required();
  imx->add_option("-o,--output", imx_out, "Output imatrix .gguf")->required();
  imx->add_flag("-f,--force", imx_force, "Overwrite an existing output file");

  auto* demo = app.add_subcommand("make-demo", "Write a tiny LLaMA-shaped demo checkpoint (config.json, 2 shards, index) and calib.safetensors");
  std::string demo_dir;
  DemoConfig demo_cfg;
  demo->add_option("dir", demo_dir, "Directory to write")->required();
  demo->add_option("--layers", demo_cfg.layers, "Decoder layers")->capture_default_str();
  demo->add_option("--seed", demo_cfg.seed, "Random seed")->capture_default_str();

  for (auto* sub : {inspect, deq, imx, demo}) sub->fallthrough();  // -q, -v, -t also after the subcommand
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
  spdlog::set_level(quiet ? spdlog::level::err : (verbose ? spdlog::level::debug : spdlog::level::info));

  try {
    if (*inspect) {
      const GgufFile file(inspect_path);
      fmt::print("{}", describe_gguf(file));
      return 0;
    }
    if (*deq) {
      DType dt = DType::F32;
      if (deq_dtype == "f16") dt = DType::F16;
      else if (deq_dtype == "bf16") dt = DType::BF16;
      else if (deq_dtype != "f32") throw UsageError("--dtype " + deq_dtype + ": use f32, f16 or bf16");
      if (fs::path(deq_out).extension() == ".gguf") {
        const size_t n = dequantize_gguf_to_gguf(deq_in, deq_out, deq_force);
        if (!quiet) fmt::print("wrote {}: {} tensors as F32, metadata kept\n", deq_out, n);
        return 0;
      }
      const size_t n = dequantize_gguf(deq_in, deq_out, dt, deq_force);
      if (!quiet) fmt::print("wrote {}: {} tensors as {}\n", deq_out, n, deq_dtype);
      return 0;
    }
    if (*imx) {
      const Checkpoint model = Checkpoint::open(imx_model);
      const CalibrationSet calib(std::vector<fs::path>(imx_calib.begin(), imx_calib.end()));
      std::vector<std::string> missing;
      Imatrix m = compute_imatrix(model, calib, opts.effective_threads(), &missing);
      for (const auto& c : imx_calib) m.datasets.push_back(fs::path(c).filename().string());
      for (const auto& name : missing) spdlog::warn("{}: no calibration activations", name);
      if (m.tensors.empty()) throw InputError("no weight of " + imx_model + " has calibration activations");
      write_imatrix_gguf(imx_out, m, imx_force);
      if (!quiet) fmt::print("wrote {}: {} entries from {} calibration file(s)\n", imx_out, m.tensors.size(), imx_calib.size());
      return 0;
    }
    if (*demo) {
      write_demo_checkpoint(demo_dir, demo_cfg);
      write_demo_calibration(fs::path(demo_dir) / "calib.safetensors", demo_cfg);
      if (!quiet) fmt::print("wrote demo checkpoint and calibration activations (calib.safetensors) to {}\n", demo_dir);
      return 0;
    }

    if (inputs.empty()) throw UsageError("no INPUT given (a checkpoint directory or .safetensors file); see --help");
    if (output.empty() && !dry_run) throw UsageError("no output given: -o OUTPUT.gguf");
    opts.method = parse_method(method);
    if ((opts.method == MethodKind::Nf4 || opts.method == MethodKind::Fp4) && group_opt->count() > 0) {
      if (opts.group_size <= 0) throw UsageError("--group-size must be positive for nf4/fp4");
      opts.nf4_blocksize = static_cast<size_t>(opts.group_size);
    }
    opts.type = type;
    if (awq_clip_opt->count() > 0) opts.awq_clip = awq_clip;
    for (const auto& s : tensor_types) opts.tensor_types.push_back(parse_tensor_type_override(s));
    validate_options(opts);
    if (!output.empty() && !force && !dry_run && output_format == "gguf" && fs::exists(output))
      throw UsageError(output + ": output exists; pass --force to overwrite it");

    std::vector<fs::path> paths(inputs.begin(), inputs.end());
    const Checkpoint ckpt = Checkpoint::open_files(paths);
    if (output_format == "bnb") {
      if (dry_run) throw UsageError("--dry-run is not available with --output-format bnb");
      const Report r = export_bnb(ckpt, opts, output, force);
      if (!quiet) {
        fmt::print("wrote {} (transformers + bitsandbytes {} checkpoint)\n", output, r.target);
        fmt::print("{} linear weights at {:.3f} bits per weight; the whole model {:.3f} bits per weight; {:.2f} s\n",
                   r.tensors.size(), r.tensors.empty() ? 0.0 : r.tensors.front().bits_per_weight, r.bits_per_weight(),
                   r.wall_seconds);
      }
      if (!json_path.empty()) write_json(json_path, r);
      return 0;
    }
    if (output_format != "gguf") throw UsageError("--output-format " + output_format + ": use gguf or bnb");
    std::optional<Imatrix> imatrix;
    if (!imatrix_path.empty()) imatrix = read_imatrix(imatrix_path);
    std::optional<CalibrationSet> calib;
    if (!calib_files.empty()) calib.emplace(std::vector<fs::path>(calib_files.begin(), calib_files.end()));
    if (calib && !uses_gptq(opts.method) && !uses_awq(opts.method))
      spdlog::warn("--calib is only used by --method gptq, awq and awq+gptq");
    Plan plan = make_plan(ckpt, opts, imatrix ? &*imatrix : nullptr, imatrix_path, calib ? &*calib : nullptr);
    for (const auto& name : plan.calibration_missing) spdlog::warn("{}: no calibration data, rounded to nearest", name);
    if (plan.imatrix)
      for (const auto& name : plan.imatrix->missing) spdlog::warn("{}: no imatrix entry, quantized without importance", name);
    spdlog::debug("{} tensors from {} file(s), {} skipped", plan.tensors.size(), ckpt.file_count(), plan.skipped.size());
    for (const auto& t : plan.tensors)
      if (t.fallback) spdlog::warn("{}: {}", t.name, t.reason);

    if (dry_run) {
      Report r = report_from_plan(plan);
      r.input = ckpt.source().string();
      r.output = output;
      r.method = method_name(opts.method);
      r.threads = opts.effective_threads();
      if (!quiet) {
        print_plan(plan);
        print_totals(r, plan);
      }
      if (!json_path.empty()) write_json(json_path, r);
      return 0;
    }

    if (plan.model && std::any_of(plan.tensors.begin(), plan.tensors.end(),
                                  [](const TensorPlan& t) { return !t.format->llama_native(); }))
      spdlog::warn("integer grids are not llama.cpp types: llama.cpp will not load {}; `quantize dequantize` reads "
                   "it (use --type Q4_K_M, Q4_0, ... for llama.cpp)",
                   output);
    std::optional<AwqReport> awq;
    if (uses_awq(opts.method)) {
      AwqProgress ap;
      ap.group = [&](size_t done, size_t total, const AwqGroupReport& g) {
        if (quiet) return;
        if (!g.skipped.empty())
          fmt::print(stderr, "awq {}/{} {} -> {}: {}\n", done, total, g.prev, fmt::join(g.linears, ","), g.skipped);
        else if (g.fell_back)
          fmt::print(stderr, "awq {}/{} {} -> {}: non-finite loss, kept s = 1 ({:.2f} s)\n", done, total, g.prev,
                     fmt::join(g.linears, ","), g.seconds);
        else
          fmt::print(stderr, "awq {}/{} {} -> {}: alpha {:.2f}, output MSE {:.4g} (unscaled {:.4g}), {:.2f} s\n", done,
                     total, g.prev, fmt::join(g.linears, ","), g.alpha, g.loss, g.loss_unscaled, g.seconds);
      };
      ap.clip = [&](size_t done, size_t total, const AwqClipReport& c) {
        if (verbose > 0 && !quiet)
          fmt::print(stderr, "awq clip {}/{} {}: mean bound {:.3f} of max|w|, {:.2f} s\n", done, total, c.tensor,
                     c.mean_shrink, c.seconds);
      };
      awq = apply_awq(plan, *calib, opts, ap);
      for (const auto& g : awq->groups)
        if (g.fell_back) spdlog::warn("AWQ: {} -> {}: the search's losses were not finite; that group keeps s = 1", g.prev, fmt::join(g.linears, ","));
      if (!quiet) fmt::print(stderr, "awq: searches took {:.2f} s\n", awq->search_seconds);
    }
    cli::ConsoleProgress progress(stderr, isatty(STDERR_FILENO) != 0, quiet);
    Report r = quantize_to_gguf(ckpt, plan, opts, output, force, &progress);
    r.awq = awq;
    if (awq) r.wall_seconds += awq->search_seconds;
    if (!quiet) {
      fmt::print("wrote {}\n", output);
      print_totals(r, plan);
    }
    if (!json_path.empty()) write_json(json_path, r);
    return 0;
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
