#include "qz/calibration/engine_statistics.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"

namespace qz {

std::vector<std::vector<int32_t>> imatrix_chunks(const std::vector<int32_t>& tokens, size_t ctx, size_t max_chunks,
                                                 std::optional<int32_t> bos) {
  if (ctx < 2) throw UsageError("--ctx must be at least 2");
  if (tokens.size() < 2 * ctx)
    throw InputError(fmt::format("the calibration text has {} tokens: llama-imatrix's chunking needs at least 2 x ctx "
                                 "= {} (a longer text, or a smaller --ctx)",
                                 tokens.size(), 2 * ctx));
  size_t n = tokens.size() / ctx;
  if (max_chunks > 0) n = std::min(n, max_chunks);
  std::vector<std::vector<int32_t>> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].assign(tokens.begin() + static_cast<std::ptrdiff_t>(i * ctx), tokens.begin() + static_cast<std::ptrdiff_t>((i + 1) * ctx));
    if (bos) out[i][0] = *bos;
  }
  return out;
}

namespace {

struct SumOfSquares final : BlockObserver {
  Imatrix* m;
  explicit SumOfSquares(Imatrix* out) : m(out) {}
  void observe(const LinearGroup& g, const float* x, size_t tokens, size_t columns) override {
    for (const auto& name : g.weights) {
      ImatrixTensor& t = m->tensors[name];
      if (t.sum2.empty()) {
        t.sum2.assign(columns, 0.0f);
        t.counts.assign(1, 0.0f);
      }
      // As llama-imatrix: float sums, rows outer, columns inner.
      for (size_t r = 0; r < tokens; ++r)
        for (size_t c = 0; c < columns; ++c) t.sum2[c] += x[r * columns + c] * x[r * columns + c];
      t.counts[0] += static_cast<float>(tokens);
    }
  }
  std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup&) override { return {}; }
};

}  // namespace

Imatrix imatrix_from_windows(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows, unsigned threads,
                             const std::function<void(uint32_t, uint32_t)>& progress) {
  Imatrix m;
  BlockByBlockOptions o;
  o.threads = threads;
  o.float_inputs = true;
  BlockByBlock pass(model, windows, o);
  SumOfSquares obs(&m);
  while (pass.next_block() < pass.block_count()) {
    pass.run_next_block(obs);
    if (progress) progress(pass.next_block(), pass.block_count());
  }
  for (const auto& [name, t] : m.tensors)
    for (const float v : t.sum2)
      if (!std::isfinite(v)) throw InputError(fmt::format("imatrix: the sums of '{}' are not finite", name));
  m.chunk_count = static_cast<uint32_t>(windows.size());
  m.chunk_size = windows.empty() ? 0 : static_cast<uint32_t>(windows.front().size());
  return m;
}

struct EngineAwqActivations::Observer final : BlockObserver {
  uint64_t total = 0;
  size_t max_tokens = 0;
  std::map<BlockInput, AwqActivationBuilder> building;
  std::map<BlockInput, AwqActivations> done;
  void observe(const LinearGroup& g, const float* x, size_t tokens, size_t columns) override {
    auto it = building.find(g.input);
    if (it == building.end()) it = building.emplace(g.input, AwqActivationBuilder(columns, total, max_tokens)).first;
    it->second.add(x, tokens);
  }
  std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup& g) override {
    done[g.input] = building.at(g.input).finish();
    building.erase(g.input);
    return {};
  }
};

EngineAwqActivations::EngineAwqActivations(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                                           size_t max_tokens, unsigned threads)
    : model_(model), observer_(std::make_unique<Observer>()), probe_engine_(model, threads) {
  std::vector<std::vector<int32_t>> probe;
  size_t n = 0;
  for (size_t i = 0; i < windows.size() && (probe.empty() || n < max_tokens); ++i) {
    probe.push_back(windows[i]);
    n += windows[i].size();
  }
  probe_ = probe_engine_.embed(probe);
  BlockByBlockOptions o;
  o.threads = threads;
  o.float_inputs = true;
  pass_ = std::make_unique<BlockByBlock>(model, windows, o);
  observer_->total = pass_->tokens();
  observer_->max_tokens = max_tokens;
}

EngineAwqActivations::~EngineAwqActivations() = default;

uint64_t EngineAwqActivations::tokens() const { return pass_->tokens(); }

AwqActivations EngineAwqActivations::get(uint32_t block, BlockInput input) {
  if (have_ != UINT32_MAX && block < have_) throw std::logic_error("EngineAwqActivations: blocks are asked in order");
  while (have_ == UINT32_MAX || have_ < block) {
    observer_->done.clear();
    pass_->run_next_block(*observer_);
    have_ = pass_->next_block() - 1;
  }
  return observer_->done.at(input);
}

AwqModuleLoss EngineAwqActivations::module_loss(uint32_t block, BlockInput input, const std::vector<std::string>& names) {
  if (input != BlockInput::AttnQkv && input != BlockInput::FfnGateUp) return {};
  if (block < probe_block_) throw std::logic_error("EngineAwqActivations: module losses are asked block by block");
  while (probe_block_ < block) probe_engine_.run_block(probe_block_++, probe_);
  const std::string p = fmt::format("blk.{}.", block);
  // Which of the loss's weights is which.
  std::vector<std::string> roles;
  for (const auto& n : names) {
    if (!n.starts_with(p) || !n.ends_with(".weight")) throw std::logic_error("module_loss: a weight of another block: " + n);
    roles.push_back(n.substr(p.size(), n.size() - p.size() - 7));
  }
  auto find = [roles](const std::string& role) -> int {
    for (size_t i = 0; i < roles.size(); ++i)
      if (roles[i] == role) return static_cast<int>(i);
    return -1;
  };
  const Transformer& e = probe_engine_;
  const ModelWeights& w = model_;
  const size_t rows = probe_.rows();
  if (input == BlockInput::AttnQkv) {
    const int iq = find("attn_q"), ik = find("attn_k"), iv = find("attn_v");
    if (iq < 0 || ik < 0 || iv < 0 || roles.size() != 3) return {};
    auto h = std::make_shared<const std::vector<float>>(e.attn_norm(block, probe_));
    auto states = std::make_shared<const HiddenStates>(probe_);
    auto wq = std::make_shared<const FloatTensor>(w.get(p + "attn_q.weight"));
    auto wk = std::make_shared<const FloatTensor>(w.get(p + "attn_k.weight"));
    auto wv = std::make_shared<const FloatTensor>(w.get(p + "attn_v.weight"));
    auto wo = std::make_shared<const FloatTensor>(w.get(p + "attn_output.weight"));
    auto ref = std::make_shared<const std::vector<float>>(e.attention(block, *states, *h, *wq, *wk, *wv, *wo));
    return [&e, block, h, states, wq, wk, wv, wo, ref, iq, ik, iv](const std::vector<std::vector<float>>& q) {
      auto as = [](const FloatTensor& like, const std::vector<float>& v) { return FloatTensor{v, like.rows, like.cols}; };
      const std::vector<float> y = e.attention(block, *states, *h, as(*wq, q[static_cast<size_t>(iq)]),
                                               as(*wk, q[static_cast<size_t>(ik)]), as(*wv, q[static_cast<size_t>(iv)]), *wo);
      double err = 0;
      for (size_t i = 0; i < y.size(); ++i) err += static_cast<double>(y[i] - (*ref)[i]) * (y[i] - (*ref)[i]);
      return err / static_cast<double>(y.size());
    };
  }
  const int ig = find("ffn_gate"), iu = find("ffn_up");
  if (ig < 0 || iu < 0 || roles.size() != 2) return {};
  // The MLP's input: the block's hidden states after the float attention.
  const std::vector<float> h = e.attn_norm(block, probe_);
  std::vector<float> x = probe_.x;
  const std::vector<float> o = e.attention(block, probe_, h, w.get(p + "attn_q.weight"), w.get(p + "attn_k.weight"),
                                           w.get(p + "attn_v.weight"), w.get(p + "attn_output.weight"));
  for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
  auto h2 = std::make_shared<const std::vector<float>>(e.ffn_norm(block, x, rows));
  auto wg = std::make_shared<const FloatTensor>(w.get(p + "ffn_gate.weight"));
  auto wu = std::make_shared<const FloatTensor>(w.get(p + "ffn_up.weight"));
  auto wd = std::make_shared<const FloatTensor>(w.get(p + "ffn_down.weight"));
  auto ref = std::make_shared<const std::vector<float>>(e.mlp(*h2, rows, *wg, *wu, *wd));
  return [&e, rows, h2, wg, wu, wd, ref, ig, iu](const std::vector<std::vector<float>>& q) {
    const std::vector<float> y = e.mlp(*h2, rows, FloatTensor{q[static_cast<size_t>(ig)], wg->rows, wg->cols},
                                       FloatTensor{q[static_cast<size_t>(iu)], wu->rows, wu->cols}, *wd);
    double err = 0;
    for (size_t i = 0; i < y.size(); ++i) err += static_cast<double>(y[i] - (*ref)[i]) * (y[i] - (*ref)[i]);
    return err / static_cast<double>(y.size());
  };
}

}  // namespace qz
