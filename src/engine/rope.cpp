#include "qz/engine/rope.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "qz/core/error.hpp"

namespace qz {

namespace {

struct Yarn {
  double low = 0, high = 0, mscale = 1;
};

// ggml's correction dims: the frequency index whose wavelength fits `rotations` times into the original context.
double correction_dim(double head_dim, double n_ctx_orig, double rotations, double base) {
  return head_dim * std::log(n_ctx_orig / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
}

Yarn yarn_of(const ModelConfig& m) {
  Yarn y;
  const double hd = m.head_dim, base = m.rope_freq_base;
  const double n_ctx_orig = m.rope_original_context ? m.rope_original_context : m.context_length;
  if (n_ctx_orig <= 0) throw InputError(fmt::format("{}: yarn rope scaling needs the original context length", m.name));
  y.low = std::max(0.0, std::floor(correction_dim(hd, n_ctx_orig, m.rope_yarn_beta_fast, base)));
  y.high = std::min(hd - 1, std::ceil(correction_dim(hd, n_ctx_orig, m.rope_yarn_beta_slow, base)));
  const double factor = m.rope_scaling_factor;
  y.mscale = factor <= 1 ? 1.0 : 1.0 + 0.1 * std::log(factor);
  return y;
}

}  // namespace

RopeTable rope_table(const ModelConfig& m, size_t positions) {
  const std::string& type = m.rope_scaling_type;
  if (!type.empty() && type != "linear" && type != "llama3" && type != "yarn")
    throw InputError(fmt::format("{}: rope scaling '{}' is not run by the engine (linear, llama3 and yarn are)", m.name, type));
  const size_t half = m.head_dim / 2;
  const double factor = m.rope_scaling_factor > 0 ? m.rope_scaling_factor : 1.0;
  const double freq_scale = type == "linear" || type == "yarn" ? 1.0 / factor : 1.0;
  const bool yarn = type == "yarn";
  const Yarn y = yarn ? yarn_of(m) : Yarn{};
  // Per frequency: the weight of extrapolation (yarn) and the inverse frequency.
  std::vector<double> inv_freq(half), ramp(half, 0.0);
  for (size_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(m.rope_freq_base), -2.0 * static_cast<double>(i) / static_cast<double>(m.head_dim));
    if (!m.rope_freq_factors.empty()) inv_freq[i] /= m.rope_freq_factors[i];  // llama3 scaling
    if (yarn) ramp[i] = 1.0 - std::clamp((static_cast<double>(i) - y.low) / std::max(0.001, y.high - y.low), 0.0, 1.0);
  }
  RopeTable t;
  t.cos.resize(positions * half);
  t.sin.resize(positions * half);
  for (size_t p = 0; p < positions; ++p)
    for (size_t i = 0; i < half; ++i) {
      const double extrap = static_cast<double>(p) * inv_freq[i], interp = extrap * freq_scale;
      const double theta = interp * (1 - ramp[i]) + extrap * ramp[i];
      t.cos[p * half + i] = static_cast<float>(std::cos(theta) * y.mscale);
      t.sin[p * half + i] = static_cast<float>(std::sin(theta) * y.mscale);
    }
  return t;
}

}  // namespace qz
