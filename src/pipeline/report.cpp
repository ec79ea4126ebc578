#include "qz/pipeline/report.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "qz/pipeline/gguf_layout.hpp"

namespace qz {

namespace {

using VF4u = float __attribute__((vector_size(16), aligned(4), may_alias));
using VD4 = double __attribute__((vector_size(32)));
using VL4 = int64_t __attribute__((vector_size(32)));

// Sums of x^2 and (x - y)^2 and the largest |x - y|, in double, in 8 lanes (value i in lane i % 8: two vectors of 4)
// held in vector types so that the loop vectorizes; the lanes are added in a fixed order, so the figures depend
// only on the values.
[[gnu::target_clones("avx2", "default")]] void error_sums(const float* x, const float* y, size_t n, double* sum_x2,
                                                          double* sum_e2, double* max_e) {
  VD4 sx[2] = {}, se[2] = {}, mx[2] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int h = 0; h < 2; ++h) {
      const VD4 xv = __builtin_convertvector(*reinterpret_cast<const VF4u*>(x + i + 4 * h), VD4);
      const VD4 e = xv - __builtin_convertvector(*reinterpret_cast<const VF4u*>(y + i + 4 * h), VD4);
      const VD4 ae = __builtin_bit_cast(VD4, __builtin_bit_cast(VL4, e) & 0x7fffffffffffffffLL);
      sx[h] += xv * xv;
      se[h] += e * e;
      const VL4 bigger = ae > mx[h];
      mx[h] = __builtin_bit_cast(VD4, (__builtin_bit_cast(VL4, ae) & bigger) | (__builtin_bit_cast(VL4, mx[h]) & ~bigger));
    }
  double lx[8], le[8], lm[8];
  for (int l = 0; l < 8; ++l) {
    lx[l] = sx[l / 4][l % 4];
    le[l] = se[l / 4][l % 4];
    lm[l] = mx[l / 4][l % 4];
  }
  for (int l = 0; i < n; ++i, ++l) {
    const double xv = x[i];
    const double e = xv - static_cast<double>(y[i]);
    lx[l] += xv * xv;
    le[l] += e * e;
    lm[l] = std::max(lm[l], std::fabs(e));
  }
  for (int l = 0; l < 8; ++l) {
    *sum_x2 += lx[l];
    *sum_e2 += le[l];
    *max_e = std::max(*max_e, lm[l]);
  }
}

}  // namespace

void ErrorStats::add(const float* input, const float* restored, size_t n) {
  double sx = 0.0, se = 0.0, mx = max_abs_error;
  error_sums(input, restored, n, &sx, &se, &mx);
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

nlohmann::json awq_json(const AwqReport& a) {
  nlohmann::json j;
  j["duo_scaling"] = a.duo_scaling;
  j["clip"] = a.clip;
  j["max_tokens"] = a.max_tokens;
  j["search_seconds"] = a.search_seconds;
  j["fallbacks"] = a.fallbacks();
  j["groups"] = nlohmann::json::array();
  for (const auto& g : a.groups) {
    nlohmann::json e = {{"prev", g.prev},
                        {"linears", g.linears},
                        {"tokens", g.tokens},
                        {"objective", g.objective},
                        {"seconds", g.seconds}};
    if (!g.skipped.empty()) {
      e["skipped"] = g.skipped;
    } else {
      e["alpha"] = g.alpha;
      e["loss"] = g.loss;
      e["loss_unscaled"] = g.loss_unscaled;
      e["fell_back"] = g.fell_back;
    }
    j["groups"].push_back(std::move(e));
  }
  j["clips"] = nlohmann::json::array();
  for (const auto& c : a.clips) j["clips"].push_back({{"tensor", c.tensor}, {"mean_shrink", c.mean_shrink}, {"seconds", c.seconds}});
  return j;
}

}  // namespace

size_t AwqReport::fallbacks() const {
  return static_cast<size_t>(std::count_if(groups.begin(), groups.end(), [](const AwqGroupReport& g) { return g.fell_back; }));
}

nlohmann::json to_json(const Report& rep) {
  const Report& r = rep;  // NOLINT
  nlohmann::json j;
  j["input"] = r.input;
  j["output"] = r.output;
  if (!r.output_parts.empty()) j["output_parts"] = r.output_parts;
  j["method"] = r.method;
  j["threads"] = r.threads;
  j["dry_run"] = r.dry_run;
  j["target"] = r.target;
  j["file_type"] = r.file_type ? nlohmann::json(*r.file_type) : nlohmann::json(nullptr);
  j["imatrix"] = r.imatrix.empty() ? nlohmann::json(nullptr)
                                 : nlohmann::json{{"file", r.imatrix}, {"missing", r.imatrix_missing}};
  if (r.awq) j["awq"] = awq_json(*r.awq);
  auto& ts = j["tensors"] = nlohmann::json::array();
  for (const auto& t : r.tensors) {
    nlohmann::json e;
    e["name"] = t.name;
    e["shape"] = t.shape;
    e["format"] = t.format;
    e["ggml_type"] = t.ggml_type;
    e["reason"] = t.reason;
    e["fallback"] = t.fallback;
    e["imatrix"] = t.weighted;
    e["method"] = t.method;
    if (t.gptq) {
      e["gptq"] = {{"loss", t.gptq->loss},
                   {"damp", t.gptq->damp},
                   {"tokens", t.gptq->tokens},
                   {"dead_columns", t.gptq->dead_columns},
                   {"output_rel_error", t.gptq->output_rel_error},
                   {"output_error_rows", t.gptq->output_error_rows},
                   {"refine_gain", t.gptq->refine_gain},
                   {"rtn_output_rel_error", number_or_null(t.gptq->rtn_output_rel_error)},
                   {"seconds", {{"hessian", t.gptq->hessian_seconds},
                                {"factor", t.gptq->factor_seconds},
                                {"update", t.gptq->update_seconds},
                                {"refine", t.gptq->refine_seconds},
                                {"output_error", t.gptq->output_error_seconds}}}};
    }
    e["bits_per_weight"] = t.bits_per_weight;
    e["input_bytes"] = t.input_bytes;
    e["output_bytes"] = t.output_bytes;
    if (!rep.dry_run) {
      e["rmse"] = t.error.rmse();
      e["max_abs_error"] = t.error.max_abs_error;
      e["sqnr_db"] = number_or_null(t.error.sqnr_db());
      e["seconds"] = t.seconds;
    }
    ts.push_back(std::move(e));
  }
  j["calibration_missing"] = r.calibration_missing;
  if (r.calibration)
    j["calibration"] = {{"files", r.calibration->files},       {"kind", r.calibration->kind},
                        {"tokens", r.calibration->tokens},     {"windows", r.calibration->windows},
                        {"block_by_block", r.calibration->block_by_block},
                        {"shared_by", r.calibration->shared_by},
                        {"warning", r.calibration->warning}};
  auto& sk = j["skipped"] = nlohmann::json::array();
  for (const auto& s : r.skipped) sk.push_back({{"name", s.name}, {"reason", s.reason}});
  j["totals"] = {
      {"tensors", r.tensors.size()},
      {"input_bytes", r.input_bytes},
      {"output_bytes", r.output_bytes},
      {"tensor_bytes", r.tensor_bytes},
      {"weights", r.weights},
      {"bits_per_weight", r.bits_per_weight()},
      {"fallbacks", r.fallbacks},
      {"fallback_bytes", r.fallback_bytes},
      {"wall_seconds", r.wall_seconds},
      {"peak_memory_bytes", r.peak_memory_bytes},
  };
  return j;
}

Report report_from_plan(const Plan& plan, const std::string& input, const std::string& output) {
  Report r;
  r.dry_run = true;
  r.input = input;
  r.output = output;
  r.method = method_name(plan.config.method);
  r.threads = plan.config.threads;
  if (plan.config.awq) {
    AwqReport a;
    a.duo_scaling = plan.config.awq->duo_scaling;
    a.clip = plan.config.awq->clip;
    a.max_tokens = plan.config.awq->tokens;
    r.awq = a;
  }
  for (const auto& t : plan.tensors) {
    TensorReport tr;
    tr.name = t.name;
    tr.shape = t.shape;
    tr.format = t.format->name();
    tr.ggml_type = ggml_type_label(t.format->storage_type());
    tr.reason = t.reason;
    tr.fallback = t.fallback;
    tr.weighted = t.importance != nullptr;
    tr.quantized = t.format->is_quantized();
    tr.method = t.gptq ? "gptq" : "rtn";
    if (t.transform && !t.transform->col_mul.empty()) tr.method = "awq+" + tr.method;
    tr.bits_per_weight = 8.0 * static_cast<double>(t.output_bytes) / static_cast<double>(t.numel());
    tr.input_bytes = t.input_bytes;
    tr.output_bytes = t.output_bytes;
    r.tensors.push_back(std::move(tr));
  }
  r.skipped = plan.skipped;
  r.target = plan.target();
  r.calibration_missing = plan.calibration_missing;
  r.calibration = plan.calibration;
  r.file_type = plan.file_type;
  if (plan.imatrix) {
    r.imatrix = plan.imatrix->file;
    r.imatrix_missing = plan.imatrix->missing;
  }
  r.input_bytes = plan.input_bytes;
  r.output_bytes = make_gguf_layout(plan).file_bytes();  // the whole file, known before any tensor is written
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
