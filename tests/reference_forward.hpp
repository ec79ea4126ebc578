// A plain float64 LLaMA-family forward pass (rotate-half RoPE on Hugging Face's q/k layout, GQA, Qwen2's q/k/v
// biases, Qwen3's per-head Q/K norms), written from the model definition and independent of the quantizer: the truth llama.cpp's logits and
// AWQ's folding are checked against. `weight` returns a tensor by Hugging Face name (1-D tensors as one column);
// `capture`, if set, receives every linear's input as the calibration files store it (module name, vector).
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <functional>
#include <string>
#include <vector>

#include "qz/core/dtype.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/model/architecture.hpp"

namespace qz::test {

using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;
using WeightFn = std::function<Mat(const std::string&)>;
using CaptureFn = std::function<void(const std::string& module, const Vec& input)>;

inline Mat checkpoint_weight(const Checkpoint& ck, const std::string& name) {
  const auto* e = ck.find(name);
  if (e == nullptr) throw std::runtime_error("missing " + name);
  std::vector<float> v(e->tensor->numel());
  convert_to_f32(e->bytes().data(), e->tensor->dtype, v.data(), v.size());
  const auto rows = static_cast<Eigen::Index>(e->tensor->shape[0]);
  const auto cols = static_cast<Eigen::Index>(e->tensor->shape.size() > 1 ? e->tensor->shape[1] : 1);
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), rows, cols).cast<double>();
}

inline Vec rmsnorm(const Vec& x, const Mat& w, double eps) { return (x / std::sqrt(x.squaredNorm() / x.size() + eps)).cwiseProduct(w.col(0)); }

// Hugging Face's rope parameters (transformers' modeling_rope_utils) for the config: the inverse frequencies and the
// scale of cos and sin. llama3: the factors its rope_freqs hold; linear: every frequency / factor; yarn: blended
// between interpolation (/ factor) and extrapolation by a linear ramp over the correction range, scale
// 0.1 ln(factor) + 1.
struct RefRope {
  std::vector<double> inv_freq;
  double scale = 1.0;
};

inline RefRope hf_rope(const ModelConfig& m) {
  const int dim = static_cast<int>(m.head_dim);
  const double base = m.rope_freq_base, factor = m.rope_scaling_factor;
  RefRope r;
  for (int i = 0; i < dim / 2; ++i) {
    const double pos_freq = std::pow(base, 2.0 * i / dim);
    double f = 1.0 / pos_freq;
    if (!m.rope_freq_factors.empty()) f /= m.rope_freq_factors[static_cast<size_t>(i)];
    if (m.rope_scaling_type == "linear") f /= factor;
    r.inv_freq.push_back(f);
  }
  if (m.rope_scaling_type == "yarn") {
    const double orig = m.rope_original_context ? m.rope_original_context : m.context_length;
    auto correction_dim = [&](double rotations) {
      return dim * std::log(orig / (rotations * 2 * M_PI)) / (2 * std::log(base));
    };
    const double low = std::max(std::floor(correction_dim(m.rope_yarn_beta_fast)), 0.0);
    double high = std::min(std::ceil(correction_dim(m.rope_yarn_beta_slow)), dim - 1.0);
    if (low == high) high += 0.001;
    for (int i = 0; i < dim / 2; ++i) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double extrapolation = 1 - ramp;
      const double pos_freq = std::pow(base, 2.0 * i / dim);
      r.inv_freq[static_cast<size_t>(i)] = 1.0 / (factor * pos_freq) * (1 - extrapolation) + 1.0 / pos_freq * extrapolation;
    }
    r.scale = factor <= 1 ? 1.0 : 0.1 * std::log(factor) + 1.0;
  }
  return r;
}

inline void rope(Vec& v, int heads, int hd, int pos, const RefRope& r) {
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      const double theta = pos * r.inv_freq[static_cast<size_t>(i)];
      const double c = std::cos(theta) * r.scale, sn = std::sin(theta) * r.scale;
      const double a = v[h * hd + i], b = v[h * hd + i + hd / 2];
      v[h * hd + i] = a * c - b * sn;
      v[h * hd + i + hd / 2] = b * c + a * sn;
    }
}

inline std::vector<std::vector<double>> reference_logits(const WeightFn& weight, const ModelConfig& m,
                                                         const std::vector<int>& tokens, bool has_lm_head,
                                                         const CaptureFn& capture = {}) {
  const int H = static_cast<int>(m.head_count), KV = static_cast<int>(m.head_count_kv), hd = static_cast<int>(m.head_dim);
  const Mat emb = weight("model.embed_tokens.weight");
  const Mat out_w = has_lm_head ? weight("lm_head.weight") : emb;
  auto seen = [&](const std::string& module, const Vec& v) {
    if (capture) capture(module, v);
  };
  std::vector<Vec> x;
  for (int t : tokens) x.push_back(emb.row(t).transpose());
  const RefRope rope_params = hf_rope(m);
  for (uint32_t l = 0; l < m.block_count; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const Mat wq = weight(p + "self_attn.q_proj.weight"), wk = weight(p + "self_attn.k_proj.weight"),
              wv = weight(p + "self_attn.v_proj.weight"), wo = weight(p + "self_attn.o_proj.weight");
    const Mat n1 = weight(p + "input_layernorm.weight"), n2 = weight(p + "post_attention_layernorm.weight");
    const Mat wg = weight(p + "mlp.gate_proj.weight"), wu = weight(p + "mlp.up_proj.weight"),
              wd = weight(p + "mlp.down_proj.weight");
    const bool bias = m.arch->requires_qkv_bias;  // Qwen2
    const Vec bq = bias ? Vec(weight(p + "self_attn.q_proj.bias").col(0)) : Vec::Zero(wq.rows());
    const Vec bk = bias ? Vec(weight(p + "self_attn.k_proj.bias").col(0)) : Vec::Zero(wk.rows());
    const Vec bv = bias ? Vec(weight(p + "self_attn.v_proj.bias").col(0)) : Vec::Zero(wv.rows());
    const Mat qn = m.arch->qk_norm ? weight(p + "self_attn.q_norm.weight") : Mat(), kn = m.arch->qk_norm ? weight(p + "self_attn.k_norm.weight") : Mat();
    std::vector<Vec> q, k, v;
    for (size_t t = 0; t < x.size(); ++t) {
      const Vec h = rmsnorm(x[t], n1, m.rms_norm_eps);
      seen(p + "self_attn.q_proj", h);
      q.push_back(wq * h + bq);
      k.push_back(wk * h + bk);
      v.push_back(wv * h + bv);
      if (m.arch->qk_norm) {  // Qwen3Attention: q_norm / k_norm (RMSNorm over head_dim) on each head, before RoPE
        for (int hh = 0; hh < H; ++hh) q.back().segment(hh * hd, hd) = rmsnorm(q.back().segment(hh * hd, hd), qn, m.rms_norm_eps);
        for (int hh = 0; hh < KV; ++hh) k.back().segment(hh * hd, hd) = rmsnorm(k.back().segment(hh * hd, hd), kn, m.rms_norm_eps);
      }
      rope(q.back(), H, hd, static_cast<int>(t), rope_params);
      rope(k.back(), KV, hd, static_cast<int>(t), rope_params);
    }
    for (size_t t = 0; t < x.size(); ++t) {
      Vec attn = Vec::Zero(H * hd);
      for (int h = 0; h < H; ++h) {
        const int g = h / (H / KV);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (size_t u = 0; u <= t; ++u) {
          s[u] = q[t].segment(h * hd, hd).dot(k[u].segment(g * hd, hd)) / std::sqrt(double(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (size_t u = 0; u <= t; ++u) attn.segment(h * hd, hd) += s[u] / z * v[u].segment(g * hd, hd);
      }
      seen(p + "self_attn.o_proj", attn);
      x[t] += wo * attn;
      const Vec h2 = rmsnorm(x[t], n2, m.rms_norm_eps);
      seen(p + "mlp.gate_proj", h2);
      const Vec gate = wg * h2, up = wu * h2;
      Vec act(gate.size());
      for (Eigen::Index i = 0; i < gate.size(); ++i) act[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      seen(p + "mlp.down_proj", act);
      x[t] += wd * act;
    }
  }
  const Mat norm = weight("model.norm.weight");
  std::vector<std::vector<double>> logits;
  for (const auto& xt : x) {
    const Vec l = out_w * rmsnorm(xt, norm, m.rms_norm_eps);
    logits.emplace_back(l.data(), l.data() + l.size());
  }
  return logits;
}

inline std::vector<std::vector<double>> reference_logits(const Checkpoint& ck, const ModelConfig& m,
                                                         const std::vector<int>& tokens, const CaptureFn& capture = {}) {
  return reference_logits([&](const std::string& n) { return checkpoint_weight(ck, n); }, m, tokens,
                          ck.find("lm_head.weight") != nullptr, capture);
}

// Runs the reference forward pass over `sequences` and writes every captured linear input to a calibration file
// (docs/calibration.md: F32 [tokens, in] under the module name): real activations of the model itself.
inline void write_captured_calibration(const Checkpoint& ck, const ModelConfig& m,
                                       const std::vector<std::vector<int>>& sequences, const std::filesystem::path& out) {
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, uint64_t> width;
  for (const auto& seq : sequences)
    reference_logits(ck, m, seq, [&](const std::string& module, const Vec& x) {
      auto& d = data[module];
      for (Eigen::Index i = 0; i < x.size(); ++i) d.push_back(static_cast<float>(x[i]));
      width[module] = static_cast<uint64_t>(x.size());
    });
  std::vector<SafetensorsBlob> blobs;
  for (const auto& [module, d] : data) {
    SafetensorsBlob b{module, DType::F32, {d.size() / width[module], width[module]}, std::vector<uint8_t>(d.size() * 4)};
    std::memcpy(b.bytes.data(), d.data(), b.bytes.size());
    blobs.push_back(std::move(b));
  }
  write_safetensors(out, blobs);
}

}  // namespace qz::test
