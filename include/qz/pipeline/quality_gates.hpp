// Quality gates: is a quantized output good enough to ship? Measured by the engine (as `quantize eval`) on an
// evaluation text, the output against the float model it came from: perplexity increase (relative), mean KL
// divergence of the output's next-token distribution from the float model's, and top-1 agreement.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace qz {

struct QualityGates {
  std::optional<double> max_ppl_increase;  // relative: 0.05 = the output's perplexity at most 5% above the float's
  std::optional<double> max_kl;            // mean KL(float || output) per scored token, nats
  std::optional<double> min_top1;          // fraction of positions where both models' top token agree
  std::filesystem::path eval_text;         // the evaluation text
  size_t ctx = 512, chunks = 0;            // as `quantize eval` (chunks 0: all)
  bool any() const { return max_ppl_increase || max_kl || min_top1; }
};

// Throws UsageError when a gate has no evaluation text or a bound is out of range (`where` names the source of the
// settings in the message, e.g. "--max-kl" or "recipe.json: models[0].outputs[1].gates").
void validate_quality_gates(const QualityGates& g, const std::string& where);

struct GateResult {
  double ppl = 0, base_ppl = 0, ppl_increase = 0, kl_mean = 0, top1 = 0;
  size_t tokens = 0, scored = 0;
  std::vector<std::string> failures;  // one line per failed gate, with its figure and bound
  bool passed() const { return failures.empty(); }
};

// Evaluates `output` against `float_model` on the gates' text (tokenized by the float model's tokenizer).
GateResult check_quality_gates(const std::filesystem::path& float_model, const std::filesystem::path& output,
                               const QualityGates& g, unsigned threads);

nlohmann::json to_json(const QualityGates& g, const GateResult& r);

}  // namespace qz
