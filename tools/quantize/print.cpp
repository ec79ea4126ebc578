#include "print.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>

#include "qz/core/error.hpp"
#include "qz/pipeline/gguf_layout.hpp"

namespace qz::cli {

namespace {

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

}  // namespace

void print_plan(std::FILE* out, const Plan& plan) {
  fmt::print(out, "{:<44} {:<22} {:<18} {:>12}  {}\n", "tensor", "shape (ne)", "type", "bytes", "why");
  for (const auto& t : plan.tensors)
    fmt::print(out, "{:<44} {:<22} {:<18} {:>12}  {}{}\n", t.name, shape_string(t.logical_ne()), t.format->name(),
               t.output_bytes, t.reason, t.name == t.source_name() ? "" : " [" + t.source_name() + "]");
  for (const auto& s : plan.skipped) fmt::print(out, "{:<44} skipped: {}\n", s.name, s.reason);
}

void print_summary(std::FILE* out, const Report& r, const std::string& output_format) {
  if (!r.dry_run && !r.output_parts.empty())
    fmt::print(out, "wrote {} parts of a split GGUF (llama.cpp loads the set from the first): {}\n", r.output_parts.size(),
               fmt::join(r.output_parts, ", "));
  else if (!r.dry_run)
    fmt::print(out, "wrote {}{}\n", r.output, output_format == "bnb" ? " (transformers + bitsandbytes checkpoint)" : "");
  fmt::print(out, "{} tensors: {} -> {} ({:.3f} bits per weight)", r.tensors.size(), human_bytes(r.input_bytes),
             human_bytes(r.output_bytes), r.bits_per_weight());
  if (!r.dry_run) {
    ErrorStats all;
    double out_err = 0, rtn_err = 0;
    size_t n_gptq = 0, n_rtn = 0;
    for (const auto& t : r.tensors) {
      if (t.quantized) all.merge(t.error);
      if (!t.gptq) continue;
      out_err += t.gptq->output_rel_error;
      ++n_gptq;
      if (t.gptq->rtn_output_rel_error) {
        rtn_err += *t.gptq->rtn_output_rel_error;
        ++n_rtn;
      }
    }
    if (const auto sqnr = all.sqnr_db()) fmt::print(out, ", quantized weights SQNR {:.2f} dB", *sqnr);
    if (n_gptq) fmt::print(out, ", GPTQ mean relative output error {:.3e}", out_err / static_cast<double>(n_gptq));
    if (n_rtn) fmt::print(out, " (round-to-nearest {:.3e})", rtn_err / static_cast<double>(n_rtn));
    fmt::print(out, ", {:.2f} s on {} threads, peak memory {}", r.wall_seconds, r.threads, human_bytes(r.peak_memory_bytes));
  }
  fmt::print(out, "\n");
  if (r.calibration) {
    const CalibrationUse& c = *r.calibration;
    fmt::print(out, "calibration: {} ({}), {} tokens", fmt::join(c.files, ", "), c.kind, c.tokens);
    if (c.windows)
      fmt::print(out, " in {} windows, {}", c.windows,
                 c.block_by_block ? "inputs from the quantized earlier blocks" : "inputs from the float model");
    fmt::print(out, "\n");
  }
  if (r.fallbacks > 0)
    fmt::print(out, "{} tensors ({}) fell back to another type because of their row length\n", r.fallbacks,
               human_bytes(r.fallback_bytes));
}

AwqProgress awq_progress(std::FILE* out, bool quiet, bool verbose) {
  AwqProgress ap;
  ap.group = [=](size_t done, size_t total, const AwqGroupReport& g) {
    if (quiet) return;
    if (!g.skipped.empty())
      fmt::print(out, "awq {}/{} {} -> {}: {}\n", done, total, g.prev, fmt::join(g.linears, ","), g.skipped);
    else if (g.fell_back)
      fmt::print(out, "awq {}/{} {} -> {}: non-finite loss, kept s = 1 ({:.2f} s)\n", done, total, g.prev,
                 fmt::join(g.linears, ","), g.seconds);
    else
      fmt::print(out, "awq {}/{} {} -> {}: alpha {:.2f}, {} MSE {:.4g} (unscaled {:.4g}), {:.2f} s\n", done, total,
                 g.prev, fmt::join(g.linears, ","), g.alpha, g.objective, g.loss, g.loss_unscaled, g.seconds);
  };
  ap.clip = [=](size_t done, size_t total, const AwqClipReport& c) {
    if (verbose && !quiet)
      fmt::print(out, "awq clip {}/{} {}: mean bound {:.3f} of max|w|, {:.2f} s\n", done, total, c.tensor, c.mean_shrink,
                 c.seconds);
  };
  return ap;
}


void write_text(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream f(path);
  if (!f) throw UsageError("--json " + path + ": cannot open for writing");
  f << text;
  if (!f) throw std::runtime_error("--json " + path + ": write failed");
}

}  // namespace qz::cli
