#include "qz/engine/transformer.hpp"

#include "qz/engine/rope.hpp"

#include <cblas.h>

#include "qz/core/blas.hpp"
#include <fmt/format.h>

#include <Eigen/Dense>
#include <cmath>

#include "qz/core/error.hpp"
#include "qz/core/parallel.hpp"

namespace qz {

namespace {

using MatR = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<MatR, 0, Eigen::OuterStride<>>;
using ConstStrided = Eigen::Map<const MatR, 0, Eigen::OuterStride<>>;

constexpr size_t kOutputBlock = 128;  // output columns per sgemm task: a fixed split, whatever the thread count

// Y[m x n] = X[m x k] * W[n x k]^T (+ bias per column): single-threaded OpenBLAS sgemm calls on fixed blocks of
// output columns, shared out over our threads (OpenBLAS' own threading changes its kernels, and so the last bits).
std::vector<float> linear(const std::vector<float>& x, size_t m, const FloatTensor& w, const FloatTensor* bias,
                          unsigned threads) {
  std::vector<float> y(m * w.rows);
  const size_t blocks = (w.rows + kOutputBlock - 1) / kOutputBlock;
  parallel_for(blocks, threads, [&](size_t b, unsigned) {
    const size_t n0 = b * kOutputBlock, n = std::min(kOutputBlock, w.rows - n0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(w.cols), 1.0f, x.data(), static_cast<int>(w.cols), w.values.data() + n0 * w.cols,
                static_cast<int>(w.cols), 0.0f, y.data() + n0, static_cast<int>(w.rows));
  });
  if (bias)
    for (size_t r = 0; r < m; ++r)
      for (size_t c = 0; c < w.rows; ++c) y[r * w.rows + c] += bias->values[c];
  return y;
}

std::vector<float> rmsnorm(const std::vector<float>& x, size_t m, const FloatTensor& w, float eps) {
  const size_t d = w.cols;
  std::vector<float> y(x.size());
  for (size_t r = 0; r < m; ++r) {
    double ss = 0;
    for (size_t c = 0; c < d; ++c) ss += static_cast<double>(x[r * d + c]) * x[r * d + c];
    const float scale = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
    for (size_t c = 0; c < d; ++c) y[r * d + c] = x[r * d + c] * scale * w.values[c];
  }
  return y;
}

}  // namespace

Transformer::Transformer(const ModelWeights& weights, unsigned threads) : w_(weights), threads_(std::max(1u, threads)) {
  const ModelConfig& m = w_.config();
  rope_table(m, 0);  // throws for a rope scaling it does not run
  if (!m.rope_freq_factors.empty() && m.rope_freq_factors.size() != m.head_dim / 2)
    throw InputError(fmt::format("{}: {} rope frequency factors for a head of {}", m.name, m.rope_freq_factors.size(), m.head_dim));
  if (m.head_count == 0 || m.head_count_kv == 0 || m.head_count % m.head_count_kv != 0)
    throw InputError(fmt::format("{}: {} attention heads cannot share {} KV heads", m.name, m.head_count, m.head_count_kv));
  dim_ = m.embedding_length;
  vocab_ = m.vocab_size;
  use_single_threaded_blas();  // threads are ours (linear())
}

HiddenStates Transformer::embed(const std::vector<std::vector<int32_t>>& seqs) const {
  const ModelConfig& m = w_.config();
  const size_t d = dim_;
  HiddenStates hs;
  hs.sequences = seqs;
  size_t total = 0;
  for (const auto& s : seqs) {
    hs.start.push_back(total);
    total += s.size();
  }
  hs.x.resize(total * d);
  const FloatTensor emb = w_.get("token_embd.weight");
  if (emb.cols != d) throw InputError(fmt::format("{}: token_embd.weight has rows of {}, not {}", m.name, emb.cols, d));
  for (size_t s = 0; s < seqs.size(); ++s)
    for (size_t t = 0; t < seqs[s].size(); ++t) {
      const int32_t id = seqs[s][t];
      if (id < 0 || static_cast<size_t>(id) >= emb.rows)
        throw InputError(fmt::format("token id {} is outside the vocabulary of {} tokens", id, emb.rows));
      std::copy_n(emb.values.data() + static_cast<size_t>(id) * d, d, hs.x.data() + (hs.start[s] + t) * d);
    }
  // RoPE's rotations per position, once for every block.
  size_t longest = 0;
  for (const auto& s : seqs) longest = std::max(longest, s.size());
  RopeTable rope = rope_table(m, longest);
  hs.rope_cos = std::move(rope.cos);
  hs.rope_sin = std::move(rope.sin);
  return hs;
}

std::vector<float> Transformer::attention_mix(uint32_t l, const HiddenStates& hs, const std::vector<float>& h,
                                              const FloatTensor& wq, const FloatTensor& wk, const FloatTensor& wv) const {
  const ModelConfig& m = w_.config();
  const size_t d = dim_, H = m.head_count, KV = m.head_count_kv, hd = m.head_dim, group = H / KV;
  const auto& seqs = hs.sequences;
  const auto& start = hs.start;
  const size_t total = hs.rows();
  const std::vector<float>& cosv = hs.rope_cos;
  const std::vector<float>& sinv = hs.rope_sin;
  const bool adjacent = m.arch->permute_qk;  // llama.cpp's NORM rope on permuted rows; NEOX (halves) otherwise
  auto rope = [&](std::vector<float>& v, size_t heads) {
    const size_t width = heads * hd;
    for (size_t s = 0; s < seqs.size(); ++s)
      for (size_t t = 0; t < seqs[s].size(); ++t) {
        float* row = v.data() + (start[s] + t) * width;
        for (size_t hh = 0; hh < heads; ++hh)
          for (size_t i = 0; i < hd / 2; ++i) {
            const size_t a = hh * hd + (adjacent ? 2 * i : i), b = hh * hd + (adjacent ? 2 * i + 1 : i + hd / 2);
            const float c = cosv[t * hd / 2 + i], sn = sinv[t * hd / 2 + i];
            const float xa = row[a], xb = row[b];
            row[a] = xa * c - xb * sn;
            row[b] = xb * c + xa * sn;
          }
      }
  };
  const float inv_sqrt = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::string p = fmt::format("blk.{}.", l);
  auto opt = [&](const std::string& n) { return w_.has(p + n) ? std::optional<FloatTensor>(w_.get(p + n)) : std::nullopt; };
  const auto bq = opt("attn_q.bias"), bk = opt("attn_k.bias"), bv = opt("attn_v.bias");
  if (wq.rows != H * hd || wk.rows != KV * hd || wv.rows != KV * hd || wq.cols != d)
    throw InputError(fmt::format("{}: block {}: q/k/v/o shapes do not match {} heads of {} ({} KV heads)", m.name, l, H, hd, KV));
  std::vector<float> q = linear(h, total, wq, bq ? &*bq : nullptr, threads_);
  std::vector<float> k = linear(h, total, wk, bk ? &*bk : nullptr, threads_);
  const std::vector<float> v = linear(h, total, wv, bv ? &*bv : nullptr, threads_);
  if (m.arch->qk_norm) {  // Qwen3: RMSNorm over each head of Q and of K, then RoPE (llama.cpp's qwen3.cpp)
    const FloatTensor qn = w_.get(p + "attn_q_norm.weight"), kn = w_.get(p + "attn_k_norm.weight");
    if (qn.cols != hd || kn.cols != hd)
      throw InputError(fmt::format("{}: block {}: attn_q_norm / attn_k_norm hold {} / {} values, not the head size {}",
                                   m.name, l, qn.cols, kn.cols, hd));
    q = rmsnorm(q, total * H, qn, m.rms_norm_eps);
    k = rmsnorm(k, total * KV, kn, m.rms_norm_eps);
  }
  rope(q, H);
  rope(k, KV);
  std::vector<float> attn(total * H * hd);
  parallel_for(seqs.size() * H, threads_, [&](size_t task, unsigned) {
    const size_t s = task / H, head = task % H, g = head / group, T = seqs[s].size();
    const auto Q = ConstStrided(q.data() + start[s] * H * hd + head * hd, T, hd, Eigen::OuterStride<>(H * hd));
    const auto K = ConstStrided(k.data() + start[s] * KV * hd + g * hd, T, hd, Eigen::OuterStride<>(KV * hd));
    const auto V = ConstStrided(v.data() + start[s] * KV * hd + g * hd, T, hd, Eigen::OuterStride<>(KV * hd));
    MatR S = (Q * K.transpose()) * inv_sqrt;
    for (size_t i = 0; i < T; ++i) {
      float mx = -INFINITY;
      for (size_t j = 0; j <= i; ++j) mx = std::max(mx, S(i, j));
      float z = 0;
      for (size_t j = 0; j < T; ++j) z += (S(i, j) = j <= i ? std::exp(S(i, j) - mx) : 0.0f);
      S.row(i) /= z;
    }
    Strided(attn.data() + start[s] * H * hd + head * hd, T, hd, Eigen::OuterStride<>(H * hd)) = S * V;
  });
  return attn;
}

std::vector<float> Transformer::attention(uint32_t l, const HiddenStates& hs, const std::vector<float>& h,
                                          const FloatTensor& wq, const FloatTensor& wk, const FloatTensor& wv,
                                          const FloatTensor& wo, std::vector<float>* o_input) const {
  const ModelConfig& m = w_.config();
  if (wo.cols != m.head_count * m.head_dim || wo.rows != dim_)
    throw InputError(fmt::format("{}: block {}: attn_output has shape [{}, {}], not [{}, {}]", m.name, l, wo.rows, wo.cols,
                                 dim_, m.head_count * m.head_dim));
  std::vector<float> attn = attention_mix(l, hs, h, wq, wk, wv);
  std::vector<float> o = linear(attn, hs.rows(), wo, nullptr, threads_);
  if (o_input) *o_input = std::move(attn);
  return o;
}

std::vector<float> Transformer::mlp_activation(const std::vector<float>& h2, size_t rows, const FloatTensor& wg,
                                               const FloatTensor& wu) const {
  std::vector<float> gate = linear(h2, rows, wg, nullptr, threads_);
  const std::vector<float> up = linear(h2, rows, wu, nullptr, threads_);
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  return gate;
}

std::vector<float> Transformer::project(const std::vector<float>& x, size_t rows, const FloatTensor& w) const {
  return linear(x, rows, w, nullptr, threads_);
}

std::vector<float> Transformer::mlp(const std::vector<float>& h2, size_t rows, const FloatTensor& wg, const FloatTensor& wu,
                                    const FloatTensor& wd, std::vector<float>* act) const {
  std::vector<float> gate = mlp_activation(h2, rows, wg, wu);
  std::vector<float> down = linear(gate, rows, wd, nullptr, threads_);
  if (act) *act = std::move(gate);
  return down;
}

std::vector<float> Transformer::attn_norm(uint32_t l, const HiddenStates& hs) const {
  return rmsnorm(hs.x, hs.rows(), w_.get(fmt::format("blk.{}.attn_norm.weight", l)), w_.config().rms_norm_eps);
}

std::vector<float> Transformer::ffn_norm(uint32_t l, const std::vector<float>& x, size_t rows) const {
  return rmsnorm(x, rows, w_.get(fmt::format("blk.{}.ffn_norm.weight", l)), w_.config().rms_norm_eps);
}

void Transformer::run_block(uint32_t l, HiddenStates& hs, BlockInputs* seen) const {
  const size_t total = hs.rows();
  std::vector<float>& x = hs.x;
  const std::string p = fmt::format("blk.{}.", l);
  const std::vector<float> h = attn_norm(l, hs);
  std::vector<float> attn;
  const std::vector<float> o =
      attention(l, hs, h, w_.get(p + "attn_q.weight"), w_.get(p + "attn_k.weight"), w_.get(p + "attn_v.weight"),
                w_.get(p + "attn_output.weight"), seen ? &attn : nullptr);
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  if (seen) {
    seen->attn_qkv = h;
    seen->attn_output = std::move(attn);
  }
  std::vector<float> h2 = ffn_norm(l, x, total);
  std::vector<float> act;
  const std::vector<float> down =
      mlp(h2, total, w_.get(p + "ffn_gate.weight"), w_.get(p + "ffn_up.weight"), w_.get(p + "ffn_down.weight"), seen ? &act : nullptr);
  for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
  if (seen) {
    seen->ffn_gate_up = std::move(h2);
    seen->ffn_down = std::move(act);
  }
}

std::vector<std::vector<float>> Transformer::head(const HiddenStates& hs) const {
  const ModelConfig& m = w_.config();
  const std::vector<float> hn = rmsnorm(hs.x, hs.rows(), w_.get("output_norm.weight"), m.rms_norm_eps);
  const FloatTensor out_w = w_.get(w_.has("output.weight") ? "output.weight" : "token_embd.weight");
  const std::vector<float> all = linear(hn, hs.rows(), out_w, nullptr, threads_);
  std::vector<std::vector<float>> out;
  for (size_t s = 0; s < hs.sequences.size(); ++s)
    out.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(hs.start[s] * out_w.rows),
                     all.begin() + static_cast<std::ptrdiff_t>((hs.start[s] + hs.sequences[s].size()) * out_w.rows));
  return out;
}

std::vector<std::vector<float>> Transformer::logits(const std::vector<std::vector<int32_t>>& seqs) const {
  HiddenStates h = embed(seqs);
  for (uint32_t l = 0; l < w_.config().block_count; ++l) run_block(l, h);
  return head(h);
}

}  // namespace qz
