#include "qz/pipeline/report.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>

namespace qz {

void ErrorStats::add(const float* input, const float* restored, size_t n) {
  double sx = 0.0, se = 0.0, mx = max_abs_error;
  for (size_t i = 0; i < n; ++i) {
    const double x = input[i];
    const double e = x - static_cast<double>(restored[i]);
    sx += x * x;
    se += e * e;
    mx = std::max(mx, std::fabs(e));
  }
  count += n;
  sum_sq_input += sx;
  sum_sq_error += se;
  max_abs_error = mx;
}

void ErrorStats::merge(const ErrorStats& o) {
  count += o.count;
  sum_sq_input += o.sum_sq_input;
  sum_sq_error += o.sum_sq_error;
  max_abs_error = std::max(max_abs_error, o.max_abs_error);
}

double ErrorStats::rmse() const { return count ? std::sqrt(sum_sq_error / static_cast<double>(count)) : 0.0; }

std::optional<double> ErrorStats::sqnr_db() const {
  if (sum_sq_error <= 0.0) return std::nullopt;
  if (sum_sq_input <= 0.0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sum_sq_input / sum_sq_error);
}

namespace {
nlohmann::json number_or_null(std::optional<double> v) {
  if (!v || !std::isfinite(*v)) return nullptr;
  return *v;
}
}  // namespace

nlohmann::json Report::to_json() const {
  nlohmann::json j;
  j["input"] = input;
  j["output"] = output;
  j["method"] = method;
  j["threads"] = threads;
  j["dry_run"] = dry_run;
  j["target"] = target;
  j["file_type"] = file_type ? nlohmann::json(*file_type) : nlohmann::json(nullptr);
  j["imatrix"] = imatrix.empty() ? nlohmann::json(nullptr)
                                 : nlohmann::json{{"file", imatrix}, {"missing", imatrix_missing}};
  if (awq) j["awq"] = awq->to_json();
  auto& ts = j["tensors"] = nlohmann::json::array();
  for (const auto& t : tensors) {
    nlohmann::json r;
    r["name"] = t.name;
    r["shape"] = t.shape;
    r["format"] = t.format;
    r["reason"] = t.reason;
    r["fallback"] = t.fallback;
    r["imatrix"] = t.weighted;
    r["method"] = t.method;
    if (t.gptq) {
      r["gptq"] = {{"loss", t.gptq->loss},
                   {"damp", t.gptq->damp},
                   {"tokens", t.gptq->tokens},
                   {"dead_columns", t.gptq->dead_columns},
                   {"output_rel_error", t.gptq->output_rel_error},
                   {"rtn_output_rel_error", number_or_null(t.gptq->rtn_output_rel_error)}};
    }
    r["bits_per_weight"] = t.bits_per_weight;
    r["input_bytes"] = t.input_bytes;
    r["output_bytes"] = t.output_bytes;
    if (!dry_run) {
      r["rmse"] = t.error.rmse();
      r["max_abs_error"] = t.error.max_abs_error;
      r["sqnr_db"] = number_or_null(t.error.sqnr_db());
      r["seconds"] = t.seconds;
    }
    ts.push_back(std::move(r));
  }
  j["calibration_missing"] = calibration_missing;
  auto& sk = j["skipped"] = nlohmann::json::array();
  for (const auto& s : skipped) sk.push_back({{"name", s.name}, {"reason", s.reason}});
  j["totals"] = {
      {"tensors", tensors.size()},
      {"input_bytes", input_bytes},
      {"output_bytes", output_bytes},
      {"tensor_bytes", tensor_bytes},
      {"weights", weights},
      {"bits_per_weight", bits_per_weight()},
      {"fallbacks", fallbacks},
      {"fallback_bytes", fallback_bytes},
      {"wall_seconds", wall_seconds},
      {"peak_memory_bytes", peak_memory_bytes},
  };
  return j;
}

Report report_from_plan(const Plan& plan) {
  Report r;
  r.dry_run = true;
  for (const auto& t : plan.tensors) {
    TensorReport tr;
    tr.name = t.name;
    tr.shape = t.shape;
    tr.format = t.format->name();
    tr.reason = t.reason;
    tr.fallback = t.fallback;
    tr.weighted = t.importance != nullptr;
    tr.method = t.gptq ? "gptq" : "rtn";
    if (t.transform && !t.transform->col_mul.empty()) tr.method = "awq+" + tr.method;
    tr.bits_per_weight = t.nf4 ? nf4_bits_per_weight(t.rows * t.cols, *t.nf4) : t.format->bits_per_weight();
    tr.input_bytes = t.input_bytes;
    tr.output_bytes = t.output_bytes;
    r.tensors.push_back(std::move(tr));
  }
  r.skipped = plan.skipped;
  r.target = plan.target;
  r.calibration_missing = plan.calibration_missing;
  r.file_type = plan.file_type;
  if (plan.imatrix) {
    r.imatrix = plan.imatrix->file;
    r.imatrix_missing = plan.imatrix->missing;
  }
  r.input_bytes = plan.input_bytes;
  r.output_bytes = plan.file_bytes;
  r.tensor_bytes = plan.tensor_bytes;
  r.weights = plan.weights;
  r.fallbacks = plan.fallbacks;
  r.fallback_bytes = plan.fallback_bytes;
  return r;
}

uint64_t peak_memory_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024u;
}

}  // namespace qz
