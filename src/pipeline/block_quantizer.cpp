#include "qz/pipeline/block_quantizer.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"

namespace qz {

BlockQuantizer::BlockQuantizer(const Plan& plan, const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                               BlockByBlockOptions opts, std::function<void(const BlockProgress&)> progress)
    : plan_(plan), pass_(model, windows, opts), progress_(std::move(progress)), start_(std::chrono::steady_clock::now()) {
  for (size_t i = 0; i < plan.tensors.size(); ++i) index_[plan.tensors[i].name] = i;
  for (uint32_t l = 0; l < pass_.block_count(); ++l)
    for (const auto& g : linear_groups(l))
      for (const auto& n : g.weights)
        if (const auto it = index_.find(n); it != index_.end()) block_of_[it->second] = l;
  for (size_t i = 0; i < plan.tensors.size(); ++i)
    if (plan.tensors[i].gptq && !block_of_.count(i))
      throw InputError(fmt::format("tensor '{}': GPTQ from calibration text covers the decoder blocks' linears only",
                                   plan.tensors[i].name));
}

std::optional<QuantizedTensor> BlockQuantizer::take(size_t i) {
  const auto b = block_of_.find(i);
  if (b == block_of_.end()) return std::nullopt;
  while (!done_.count(i)) {
    if (pass_.next_block() > b->second) throw std::logic_error("BlockQuantizer: a tensor taken twice");
    pass_.run_next_block(*this);
    if (progress_) {
      BlockProgress p;
      p.block = pass_.next_block() - 1;
      p.blocks = pass_.block_count();
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      p.seconds_left = p.seconds / pass_.next_block() * (p.blocks - pass_.next_block());
      progress_(p);
    }
  }
  QuantizedTensor q = std::move(done_.at(i));
  done_.erase(i);
  return q;
}

void BlockQuantizer::observe(const LinearGroup& g, const float* x, size_t tokens, size_t columns) {
  auto it = hessians_.find(g.input);
  if (it == hessians_.end()) it = hessians_.emplace(g.input, HessianAccumulator(columns)).first;
  it->second.add_rows(x, tokens, plan_.config.threads);
}

std::vector<std::pair<std::string, FloatTensor>> BlockQuantizer::finish(const LinearGroup& g) {
  std::vector<std::pair<std::string, FloatTensor>> stored;
  std::optional<Eigen::MatrixXd> H;
  const auto acc = hessians_.find(g.input);
  const uint64_t tokens = acc != hessians_.end() ? acc->second.tokens() : 0;
  if (g.input == BlockInput::AttnQkv) {
    // AWQ's folding changes the block's norms and biases too: the engine must run them as the file stores them.
    const std::string prefix = fmt::format("blk.{}.", g.block);
    for (const auto& t : plan_.tensors)
      if (t.name.starts_with(prefix) && t.transform && t.shape.size() == 1)
        stored.emplace_back(t.name, FloatTensor{read_finite_tensor(t), t.rows, t.cols});
  }
  for (const auto& name : g.weights) {
    const auto it = index_.find(name);
    if (it == index_.end()) continue;
    const TensorPlan& t = plan_.tensors[it->second];
    const auto t0 = std::chrono::steady_clock::now();
    QuantizedTensor q;
    if (t.gptq) {
      if (tokens == 0) throw std::logic_error("BlockQuantizer: a group without inputs");
      if (!H) H = acc->second.take_hessian();  // the group's accumulator is dropped after its weights
      q = quantize_tensor_gptq(t, *plan_.config.gptq, *H, tokens, plan_.config.threads);
    } else {
      q = quantize_tensor(t, plan_.config);
    }
    q.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    stored.emplace_back(name, FloatTensor{stored_values(t, q), t.rows, t.cols});
    done_[it->second] = std::move(q);
  }
  if (acc != hessians_.end()) hessians_.erase(acc);
  return stored;
}

}  // namespace qz
