// The main command's options, spelled as users of llama-quantize, AutoGPTQ and AutoAWQ know them, parsed into a
// QuantizeJob. A setting is left unset unless given, so that option resolution (pipeline/quantize_config.hpp) can
// apply each method's default and say when a setting does nothing.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qz/core/error.hpp"
#include "qz/pipeline/commands.hpp"
#include "qz/pipeline/quality_gates.hpp"

namespace qz::cli {

// Binds an option to an optional<T>: set only when the user gives it, so the method's default applies otherwise.
template <typename T>
struct Optional {
  T value{};
  CLI::Option* opt = nullptr;
  std::optional<T> get() const { return opt->count() ? std::optional<T>(value) : std::nullopt; }
};

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

struct QuantizeArgs {
  std::vector<std::string> inputs, calib, tensor_types, include_weights, exclude_weights;
  std::string output, json, method = "rtn", imatrix;
  Optional<int> bits, group_size, block_size, gptq_refine;
  Optional<double> damp;
  Optional<size_t> awq_tokens;
  Optional<double> max_ppl_increase, max_kl, min_top1;
  QualityGates gates;
  Switch symmetric, double_quant, awq_clip, weighted_fit, awq_duo;
  QuantizeJob job;
};

// Declares the options on `app`, bound to `a`.
void add_quantize_options(CLI::App& app, QuantizeArgs& a);
// After parsing: fills a.job (checks llama-quantize's positional form, parses --method and --tensor-type).
void finish_quantize_args(QuantizeArgs& a);

}  // namespace qz::cli
