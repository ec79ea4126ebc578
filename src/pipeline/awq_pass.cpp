#include "qz/pipeline/awq_pass.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "qz/core/error.hpp"
#include "qz/methods/awq.hpp"
#include "qz/model/tensor_roles.hpp"
#include "qz/calibration/statistics.hpp"

namespace qz {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

TensorTransform& transform_of(TensorPlan& t) {
  if (!t.transform) t.transform = std::make_shared<TensorTransform>();
  return *t.transform;
}

struct LayerGroup {
  AwqGroupReport report;
  std::vector<TensorPlan*> linears;
  AwqActivations act;
  std::vector<float> scales;  // empty if not scaled
};

}  // namespace

AwqReport apply_awq(Plan& plan, const CalibrationSet& calib, const AwqProgress& progress) {
  return apply_awq(
      plan,
      [&](const TensorPlan& first, size_t cols) -> std::optional<AwqActivations> {
        const std::vector<CalibInput> inputs = calib.inputs_of(first.source_name());
        if (inputs.empty()) return std::nullopt;
        return awq_activations_of(inputs, cols, plan.config.awq->tokens, first.source_name());
      },
      progress);
}

AwqReport apply_awq(Plan& plan, const AwqActivationSource& source, const AwqProgress& progress,
                    const AwqModuleLossSource& modules) {
  if (!plan.model) throw UsageError("AWQ needs a model checkpoint (config.json of a supported architecture)");
  if (!plan.config.awq) throw UsageError("apply_awq: the plan was not made with --method awq or awq+gptq");
  const AwqSettings& settings = *plan.config.awq;
  const auto t_all = Clock::now();
  AwqReport rep;
  rep.duo_scaling = settings.duo_scaling;
  rep.clip = settings.clip;
  rep.max_tokens = settings.tokens;
  AwqConfig cfg;
  cfg.duo_scaling = settings.duo_scaling;
  cfg.max_tokens = settings.tokens;
  cfg.threads = plan.config.threads;

  std::map<std::string, TensorPlan*> by_source;
  for (auto& t : plan.tensors) by_source[t.source_name()] = &t;
  auto find = [&](const std::string& name) -> TensorPlan* {
    const auto it = by_source.find(name);
    return it == by_source.end() ? nullptr : it->second;
  };

  const uint32_t layers = plan.model->block_count;
  const size_t total_groups = static_cast<size_t>(layers) * awq_scaling_groups(*plan.model, 0).size();
  size_t groups_done = 0, clips_total = 0, clips_done = 0;
  if (rep.clip)
    for (const auto& t : plan.tensors) {
      const TensorRoleInfo r = classify_tensor(t.name);
      if (r.layer >= 0 && (r.role == TensorRole::AttnV || r.role == TensorRole::AttnOutput || r.role == TensorRole::FfnGate ||
                           r.role == TensorRole::FfnUp || r.role == TensorRole::FfnDown))
        ++clips_total;
    }

  for (uint32_t layer = 0; layer < layers; ++layer) {
    std::vector<LayerGroup> groups;
    for (const ScalingGroup& sg : awq_scaling_groups(*plan.model, layer)) {
      const auto t0 = Clock::now();
      LayerGroup g;
      TensorPlan* prev = find(sg.prev);
      g.report.prev = prev ? prev->name : sg.prev;
      for (const auto& name : sg.linears) {
        TensorPlan* t = find(name);
        if (t == nullptr) {
          g.report.skipped = fmt::format("not scaled: '{}' is not in the checkpoint", name);
          break;
        }
        g.linears.push_back(t);
        g.report.linears.push_back(t->name);
      }
      if (g.report.skipped.empty() && prev == nullptr) g.report.skipped = fmt::format("not scaled: '{}' is not in the checkpoint", sg.prev);
      const size_t cols = g.linears.empty() ? 0 : g.linears.front()->cols;
      if (g.report.skipped.empty()) {
        for (const TensorPlan* t : g.linears)
          if (t->cols != cols || t->shape.size() != 2) g.report.skipped = fmt::format("not scaled: '{}' has {} input columns, not {}", t->name, t->cols, cols);
      }
      // Grouped-query attention: v's rows do not match o's columns, so o's scales cannot be folded into v; o is
      // still clipped (its activations are still loaded), as in the reference.
      std::string unscalable;
      if (g.report.skipped.empty() && sg.prev_is_linear && prev->shape.front() != cols)
        unscalable = fmt::format("not scaled: {} has {} output rows but {} reads {} columns (grouped-query "
                                 "attention), as in the reference",
                                 prev->name, prev->shape.front(), g.report.linears.front(), cols);
      if (g.report.skipped.empty() && !sg.prev_is_linear && prev->cols != cols)
        unscalable = fmt::format("not scaled: {} has {} values for {} input columns", prev->name, prev->cols, cols);
      if (g.report.skipped.empty()) {
        std::optional<AwqActivations> act = source(*g.linears.front(), cols);
        if (!act) {
          const std::string module = g.linears.front()->source_name();
          if (!settings.allow_missing_calib)
            throw InputError(fmt::format("tensor '{}': no calibration activations for AWQ (expected '{}' in the "
                                         "calibration files; --allow-missing-calib leaves such groups unscaled)",
                                         module, module.substr(0, module.rfind('.'))));
          g.report.skipped = "not scaled: no calibration data (--allow-missing-calib)";
          for (const TensorPlan* t : g.linears) plan.calibration_missing.push_back(t->source_name());
        } else {
          g.act = std::move(*act);
          g.report.tokens = g.act.tokens;
        }
      }
      if (g.report.skipped.empty()) g.report.skipped = unscalable;
      if (g.report.skipped.empty()) {
        std::vector<std::vector<float>> weights;
        std::vector<AwqLinear> linears;
        for (TensorPlan* t : g.linears) {
          weights.push_back(read_finite_tensor(*t));  // no transform yet: every linear is in exactly one group
          linears.push_back({weights.back().data(), t->rows, t->format});
        }
        const AwqModuleLoss module = modules ? modules(g.linears) : AwqModuleLoss{};
        if (module) {
          const TensorRole role = classify_tensor(g.linears.front()->name).role;
          g.report.objective = role == TensorRole::FfnGate || role == TensorRole::FfnUp ? "MLP output" : "attention output";
        }
        const AwqScaleResult r = awq_search_scales(linears, g.act, cfg, module);
        g.report.alpha = r.alpha;
        g.report.loss = r.loss;
        g.report.loss_unscaled = r.loss_unscaled;
        g.report.fell_back = r.fell_back;
        if (!r.fell_back) g.scales = r.scales;
      }
      if (!g.scales.empty()) {
        for (TensorPlan* t : g.linears) {
          transform_of(*t).col_mul = g.scales;
          t->reason += fmt::format("; AWQ input scales (alpha {:.2f}) folded into {}", g.report.alpha, prev->name);
        }
        if (sg.prev_is_linear) {
          transform_of(*prev).row_div = g.scales;
          prev->reason += fmt::format("; rows divided by {}'s AWQ scales", g.linears.front()->name);
          if (TensorPlan* bias = sg.prev_bias.empty() ? nullptr : find(sg.prev_bias)) {
            transform_of(*bias).col_div = g.scales;
            bias->reason += fmt::format("; divided by {}'s AWQ scales", g.linears.front()->name);
          }
        } else {
          transform_of(*prev).col_div = g.scales;
          prev->reason += fmt::format("; divided by the AWQ scales of {}", fmt::join(g.report.linears, ", "));
        }
      }
      g.report.seconds = seconds_since(t0);
      ++groups_done;
      if (progress.group) progress.group(groups_done, total_groups, g.report);
      groups.push_back(std::move(g));
    }

    if (!rep.clip) {
      for (auto& g : groups) rep.groups.push_back(std::move(g.report));
      continue;
    }
    // Clipping: every linear of the layer but q and k, on its final (scaled) weights and the scaled inputs.
    for (auto& g : groups) {
      if (g.act.sample_tokens == 0) continue;
      if (!g.scales.empty())
        for (size_t t = 0; t < g.act.sample_tokens; ++t)
          for (size_t j = 0; j < g.act.cols; ++j) g.act.sample[t * g.act.cols + j] /= g.scales[j];
      for (TensorPlan* t : g.linears) {
        const TensorRole role = classify_tensor(t->name).role;
        if (role == TensorRole::AttnQ || role == TensorRole::AttnK) continue;
        const auto t0 = Clock::now();
        AwqClipReport c;
        c.tensor = t->name;
        const size_t group = awq_clip_group(*t->format, t->cols);
        if (t->format->is_quantized() && t->cols % group == 0) {
          std::vector<float> w(t->rows * t->cols);
          read_rows(*t, 0, t->rows, w.data());
          if (std::all_of(w.begin(), w.end(), [](float v) { return std::isfinite(v); })) {
            std::vector<float> bounds =
                awq_search_clip_sampled({w.data(), t->rows, t->format}, g.act.sample.data(), g.act.sample_tokens, t->cols, group, cfg);
            double shrink = 0;
            const size_t groups_per_row = t->cols / group;
            for (size_t k = 0; k < bounds.size(); ++k) {
              const float* seg = w.data() + (k / groups_per_row) * t->cols + (k % groups_per_row) * group;
              float m = 0;
              for (size_t i = 0; i < group; ++i) m = std::max(m, std::fabs(seg[i]));
              shrink += m > 0 ? bounds[k] / m : 1.0;
            }
            c.mean_shrink = bounds.empty() ? 1.0 : shrink / static_cast<double>(bounds.size());
            TensorTransform& x = transform_of(*t);
            x.clip = std::move(bounds);
            x.clip_group = group;
          }
        }
        c.seconds = seconds_since(t0);
        ++clips_done;
        if (progress.clip) progress.clip(clips_done, clips_total, c);
        rep.clips.push_back(std::move(c));
      }
    }
    for (auto& g : groups) rep.groups.push_back(std::move(g.report));
  }
  rep.search_seconds = seconds_since(t_all);
  return rep;
}

}  // namespace qz
