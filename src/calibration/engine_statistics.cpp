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
    : observer_(std::make_unique<Observer>()), max_tokens_(max_tokens) {
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

}  // namespace qz
