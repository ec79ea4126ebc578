#include "qz/pipeline/quality_gates.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"
#include "qz/pipeline/commands.hpp"

namespace qz {

namespace fs = std::filesystem;

void validate_quality_gates(const QualityGates& g, const std::string& where) {
  if (!g.any()) return;
  if (g.eval_text.empty())
    throw UsageError(fmt::format("{}: a quality gate needs an evaluation text (--eval-text FILE)", where));
  if (g.max_ppl_increase && !(*g.max_ppl_increase >= 0))
    throw UsageError(fmt::format("{}: max_ppl_increase {} must be 0 or more (relative: 0.05 is 5%)", where, *g.max_ppl_increase));
  if (g.max_kl && !(*g.max_kl >= 0)) throw UsageError(fmt::format("{}: max_kl {} must be 0 or more", where, *g.max_kl));
  if (g.min_top1 && !(*g.min_top1 >= 0 && *g.min_top1 <= 1))
    throw UsageError(fmt::format("{}: min_top1 {} must lie in [0, 1]", where, *g.min_top1));
}

GateResult check_quality_gates(const fs::path& float_model, const fs::path& output, const QualityGates& g,
                               unsigned threads) {
  EvalJob job;
  job.model = output;
  job.base = float_model;
  job.text = g.eval_text;
  job.ctx = g.ctx;
  job.chunks = g.chunks;
  job.threads = threads;
  if (fs::is_directory(float_model)) job.tokenizer = float_model;
  const EvalResult e = run_eval(job);
  GateResult r;
  r.ppl = e.ppl.ppl;
  r.base_ppl = e.ppl.kl->base_ppl;
  r.ppl_increase = r.ppl / r.base_ppl - 1.0;
  r.kl_mean = e.ppl.kl->mean;
  r.top1 = e.ppl.kl->top1_agreement;
  r.tokens = e.tokens;
  r.scored = e.ppl.scored;
  if (g.max_ppl_increase && !(r.ppl_increase <= *g.max_ppl_increase))
    r.failures.push_back(fmt::format("perplexity {:.4f} is {:+.2f}% over the float model's {:.4f} (allowed {:+.2f}%)",
                                     r.ppl, 100 * r.ppl_increase, r.base_ppl, 100 * *g.max_ppl_increase));
  if (g.max_kl && !(r.kl_mean <= *g.max_kl))
    r.failures.push_back(fmt::format("mean KL divergence {:.6f} exceeds {:.6f}", r.kl_mean, *g.max_kl));
  if (g.min_top1 && !(r.top1 >= *g.min_top1))
    r.failures.push_back(fmt::format("top-1 agreement {:.4f} is below {:.4f}", r.top1, *g.min_top1));
  return r;
}

nlohmann::json to_json(const QualityGates& g, const GateResult& r) {
  nlohmann::json bounds = nlohmann::json::object();
  if (g.max_ppl_increase) bounds["max_ppl_increase"] = *g.max_ppl_increase;
  if (g.max_kl) bounds["max_kl"] = *g.max_kl;
  if (g.min_top1) bounds["min_top1"] = *g.min_top1;
  return {{"passed", r.passed()},   {"gates", bounds},        {"eval_text", g.eval_text.string()},
          {"ctx", g.ctx},           {"tokens", r.tokens},     {"scored", r.scored},
          {"ppl", r.ppl},           {"base_ppl", r.base_ppl}, {"ppl_increase", r.ppl_increase},
          {"kl_mean", r.kl_mean},   {"top1", r.top1},         {"failures", r.failures}};
}

}  // namespace qz
