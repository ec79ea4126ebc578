// A plain float64 LLaMA-family forward pass (rotate-half RoPE on Hugging Face's q/k layout, GQA, Qwen2's q/k/v
// biases), written from the model definition and independent of the quantizer: the truth llama.cpp's logits and
// AWQ's folding are checked against. `weight` returns a tensor by Hugging Face name (1-D tensors as one column);
// `capture`, if set, receives every linear's input as the calibration files store it (module name, vector).
#pragma once

#include <Eigen/Dense>
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

inline void rope(Vec& v, int heads, int hd, int pos, double base, const std::vector<float>& factors = {}) {
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      const double theta = pos * std::pow(base, -2.0 * i / hd) / (factors.empty() ? 1.0 : factors[static_cast<size_t>(i)]);
      const double a = v[h * hd + i], b = v[h * hd + i + hd / 2];
      v[h * hd + i] = a * std::cos(theta) - b * std::sin(theta);
      v[h * hd + i + hd / 2] = b * std::cos(theta) + a * std::sin(theta);
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
    std::vector<Vec> q, k, v;
    for (size_t t = 0; t < x.size(); ++t) {
      const Vec h = rmsnorm(x[t], n1, m.rms_norm_eps);
      seen(p + "self_attn.q_proj", h);
      q.push_back(wq * h + bq);
      k.push_back(wk * h + bk);
      v.push_back(wv * h + bv);
      rope(q.back(), H, hd, static_cast<int>(t), m.rope_freq_base, m.rope_freq_factors);
      rope(k.back(), KV, hd, static_cast<int>(t), m.rope_freq_base, m.rope_freq_factors);
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
