// `quantize`: the command-line front end. A thin shell: each subcommand's options are parsed into one pipeline
// request (qz/pipeline/commands.hpp), one pipeline function runs it, and the handler prints what it returns.
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input, 3 a quality gate failed (the output is kept).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "print.hpp"
#include "quantize_args.hpp"
#include "progress.hpp"
#include "qz/core/error.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/quality_gates.hpp"
#include "batch.hpp"

namespace {

using namespace qz;
namespace fs = std::filesystem;

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitGate = 3;

struct Verbosity {
  bool quiet = false;
  int verbose = 0;
};

void add_verbosity(CLI::App& app, Verbosity& v) {
  app.add_flag("-v,--verbose", v.verbose, "More log output");
  app.add_flag("-q,--quiet", v.quiet, "Only errors");
}

// ---- quantize INPUT... -o OUTPUT -------------------------------------------------------------------------------

int handle_quantize(cli::QuantizeArgs& a, const Verbosity& v) {
  cli::finish_quantize_args(a);
  // With --json - the report is the only thing on stdout.
  std::FILE* human = a.json == "-" ? stderr : stdout;
  cli::ConsoleProgress progress(stderr, isatty(STDERR_FILENO) != 0, v.quiet);
  QuantizeEvents ev;
  ev.warn = [](const std::string& s) { spdlog::warn("{}", s); };
  if (!v.quiet) ev.note = [](const std::string& s) { fmt::print(stderr, "note: {}\n", s); };
  ev.planned = [&](const Plan& plan) {
    spdlog::debug("{} tensors, {} skipped", plan.tensors.size(), plan.skipped.size());
    if (a.job.dry_run && !v.quiet) cli::print_plan(human, plan);
  };
  ev.awq = cli::awq_progress(stderr, v.quiet, v.verbose > 0);
  if (!v.quiet)
    ev.block = [](const BlockProgress& p) {
      fmt::print(stderr, "calibration: block {}/{} quantized, {:.1f} s, about {:.0f} s left\n", p.block + 1, p.blocks,
                 p.seconds, p.seconds_left);
    };
  ev.awq_done = [&](const AwqReport& r) {
    if (!v.quiet) fmt::print(stderr, "awq: searches took {:.2f} s\n", r.search_seconds);
  };
  ev.progress = &progress;
  const Report r = run_quantize(a.job, ev);
  if (!v.quiet) cli::print_summary(human, r, a.job.output_format);
  nlohmann::json report = to_json(r);
  int code = 0;
  if (a.gates.any() && !a.job.dry_run) {
    const GateResult g = check_quality_gates(a.job.inputs.front(), a.job.output, a.gates, a.job.options.threads);
    report["quality"] = to_json(a.gates, g);
    if (!v.quiet)
      fmt::print(human, "quality: ppl {:.4f} vs float {:.4f} ({:+.2f}%), mean KL {:.6f}, top-1 agreement {:.2f}%\n",
                 g.ppl, g.base_ppl, 100 * g.ppl_increase, g.kl_mean, 100 * g.top1);
    for (const auto& f : g.failures) spdlog::error("quality gate failed: {} ({} kept)", f, a.job.output.string());
    if (!g.passed()) code = kExitGate;
  }
  if (!a.json.empty()) cli::write_text(a.json, report.dump(2) + "\n");
  return code;
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
  size_t ctx = 512, chunks = 0;
  unsigned threads = 0;
};

int handle_imatrix(const ImatrixArgs& a, const Verbosity& v) {
  ImatrixJob job;
  job.model = a.model;
  job.calib.assign(a.calib.begin(), a.calib.end());
  job.output = a.output;
  job.force = a.force;
  job.ctx = a.ctx;
  job.chunks = a.chunks;
  job.threads = a.threads;
  if (!v.quiet)
    job.progress = [](uint32_t done, uint32_t total) { fmt::print(stderr, "imatrix: block {}/{}\n", done, total); };
  const ImatrixResult r = run_imatrix(job);
  for (const auto& name : r.missing) spdlog::warn("{}: no calibration activations", name);
  if (!v.quiet) {
    if (r.chunks)
      fmt::print("wrote {}: {} entries from {} chunks of {} tokens ({} tokens of text)\n", a.output, r.entries, r.chunks,
                 a.ctx, r.tokens);
    else
      fmt::print("wrote {}: {} entries from {} calibration file(s)\n", a.output, r.entries, a.calib.size());
  }
  return 0;
}

struct TokenizeArgs {
  std::string model, text, json;
};

int handle_tokenize(const TokenizeArgs& a) {
  const TokenizeResult r = run_tokenize(a.model, a.text);
  if (!a.json.empty()) {
    cli::write_text(a.json, nlohmann::json{{"tokens", r.ids}, {"pieces", r.pieces}}.dump() + "\n");
    if (a.json == "-") return 0;
  }
  for (size_t i = 0; i < r.ids.size(); ++i) fmt::print("{:6} -> '{}'\n", r.ids[i], r.pieces[i]);
  return 0;
}

int handle_eval(const EvalJob& job, const std::string& json, const Verbosity& v) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const EvalResult r = run_eval(job, [&](size_t done, size_t total, double ppl) {
    if (v.quiet) return;
    if (tty) fmt::print(stderr, "\r[{}/{}] ppl {:.4f}", done, total, ppl);
    else fmt::print(stderr, "[{}/{}] ppl {:.4f}\n", done, total, ppl);
    if (tty && done == total) fmt::print(stderr, "\n");
  });
  std::FILE* human = json == "-" ? stderr : stdout;
  if (!v.quiet) {
    fmt::print(human, "{}: PPL = {:.4f} +/- {:.5f} over {} chunks of {} ({} scored tokens), {:.1f} tokens/s\n",
               job.model.string(), r.ppl.ppl, r.ppl.ppl_error, r.ppl.chunks, job.ctx, r.ppl.scored, r.tokens_per_second);
    if (r.ppl.kl)
      fmt::print(human, "KL divergence from {}: mean {:.6f}, 99th percentile {:.6f}, max {:.6f}; same top token {:.2f}%\n",
                 job.base.string(), r.ppl.kl->mean, r.ppl.kl->p99, r.ppl.kl->max, 100.0 * r.ppl.kl->top1_agreement);
  }
  if (!json.empty()) cli::write_text(json, to_json(job, r).dump(2) + "\n");
  return 0;
}

struct DemoArgs {
  std::string dir;
  DemoConfig cfg;
};

int handle_make_demo(const DemoArgs& a, const Verbosity& v) {
  run_make_demo(a.dir, a.cfg);
  if (!v.quiet) fmt::print("wrote demo checkpoint, calibration text (calib.txt) and activations (calib.safetensors) to {}\n", a.dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  qz::install_fault_handlers_for_cli();
  auto log = spdlog::stderr_color_mt("quantize");
  spdlog::set_default_logger(log);
  spdlog::set_pattern("%^%l%$: %v");

  CLI::App app{"quantize: shrink LLM checkpoints (Hugging Face safetensors) into GGUF files.\n"
               "  quantize INPUT -o OUTPUT.gguf [--type Q4_K_M | --method gptq --bits 4 --calib TEXT ...]\n"
               "  quantize inspect FILE.gguf | dequantize FILE.gguf -o OUT.safetensors | imatrix MODEL --calib F -o I.gguf\n"
               "  quantize tokenize MODEL --text FILE [--json FILE|-]\n"
               "  quantize eval MODEL (--text FILE | --tokens FILE) [--ctx 512] [--base FLOAT_MODEL] [--json FILE|-]\n"
               "  quantize batch RECIPE.json [--shard I/N] [--dry-run] [--json FILE|-] [--junit FILE] [--merge]\n"
               "  quantize make-demo DIR",
               "quantize"};
  app.set_version_flag("--version", std::string("quantize ") + QUANTIZE_VERSION);
  Verbosity verbosity;
  cli::QuantizeArgs qa;
  cli::add_quantize_options(app, qa);
  add_verbosity(app, verbosity);
  app.footer(describe_storage_types());

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
  auto* imx = app.add_subcommand("imatrix", "Compute an importance matrix (llama.cpp's GGUF imatrix) from text or activations");
  imx->add_option("model", xa.model, "Checkpoint directory, .safetensors file or GGUF model")->required();
  imx->add_option("--calib", xa.calib,
                  "A text file (.txt, .jsonl, .json), run as llama-imatrix runs -f; or calibration safetensors files "
                  "(docs/calibration.md), repeatable")
      ->required()
      ->allow_extra_args(false);
  imx->add_option("-c,--ctx", xa.ctx, "Text: tokens per chunk (as llama-imatrix -c)")->capture_default_str();
  imx->add_option("--chunks", xa.chunks, "Text: at most this many chunks (0: all)")->capture_default_str();
  imx->add_option("-t,--threads", xa.threads, "Worker threads (default: all cores)");
  imx->add_option("-o,--output", xa.output, "Output imatrix .gguf")->required();
  imx->add_flag("-f,--force", xa.force, "Overwrite an existing output file");

  TokenizeArgs ta;
  auto* tok = app.add_subcommand("tokenize", "Print the token ids the model reads for a text (as llama-tokenize)");
  tok->add_option("model", ta.model, "Checkpoint directory (with tokenizer.model)")->required();
  tok->add_option("--text", ta.text, "Text file to tokenize")->required();
  tok->add_option("--json", ta.json, "Write {\"tokens\": [...], \"pieces\": [...]} to FILE ('-': stdout only that)");

  EvalJob ej;
  std::string ej_model, ej_text, ej_tokens, ej_base, ej_tokenizer, ej_json;
  auto* ev = app.add_subcommand("eval", "Perplexity of a checkpoint or GGUF file, as llama-perplexity computes it (and KL divergence with --base)");
  ev->add_option("model", ej_model, "Checkpoint directory or .gguf file")->required();
  ev->add_option("--text", ej_text, "Evaluation text (tokenized with the model's tokenizer)");
  ev->add_option("--tokens", ej_tokens, "Evaluation tokens: a JSON list of ids, or little-endian uint32 (.u32)");
  ev->add_option("--ctx", ej.ctx, "Tokens per chunk")->capture_default_str();
  ev->add_option("--chunks", ej.chunks, "At most this many chunks (default: all)");
  ev->add_option("--base", ej_base, "Float model to measure KL divergence from (checkpoint or .gguf)");
  ev->add_option("--tokenizer", ej_tokenizer, "Checkpoint directory whose tokenizer encodes --text (for a GGUF model)");
  ev->add_option("-t,--threads", ej.threads, "Worker threads (default: all cores)");
  ev->add_option("--json", ej_json, "Write the figures as JSON to FILE ('-': stdout, the human lines then go to stderr)");

  DemoArgs ma;
  auto* demo = app.add_subcommand("make-demo", "Write a tiny LLaMA-shaped demo checkpoint (config.json, 2 shards, index), calib.txt and calib.safetensors");
  demo->add_option("dir", ma.dir, "Directory to write")->required();
  demo->add_option("--layers", ma.cfg.layers, "Decoder layers")->capture_default_str();
  demo->add_option("--seed", ma.cfg.seed, "Random seed")->capture_default_str();
  demo->add_option("--hidden", ma.cfg.hidden, "Hidden size (a synthetic model of any size, e.g. for benchmarks)")->capture_default_str();
  demo->add_option("--intermediate", ma.cfg.intermediate, "MLP width")->capture_default_str();
  demo->add_option("--heads", ma.cfg.heads, "Attention heads")->capture_default_str();
  demo->add_option("--kv-heads", ma.cfg.kv_heads, "Key/value heads")->capture_default_str();
  demo->add_option("--vocab", ma.cfg.vocab, "Vocabulary size")->capture_default_str();

  cli::BatchArgs ba;
  auto* batch = app.add_subcommand("batch", "Make a recipe's outputs (models x types), resumable and shardable, with quality gates");
  cli::add_batch_options(*batch, ba);

  for (auto* sub : {inspect, deq, imx, tok, ev, demo, batch}) {
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
    if (*tok) return handle_tokenize(ta);
    if (*ev) {
      ej.model = ej_model;
      ej.text = ej_text;
      ej.tokens = ej_tokens;
      ej.base = ej_base;
      ej.tokenizer = ej_tokenizer;
      return handle_eval(ej, ej_json, verbosity);
    }
    if (*demo) return handle_make_demo(ma, verbosity);
    if (*batch) return cli::handle_batch(ba, verbosity.quiet);
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
