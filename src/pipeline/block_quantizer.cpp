#include "qz/pipeline/block_quantizer.hpp"

#include <fmt/format.h>

#include "qz/core/error.hpp"

namespace qz {

namespace {

// The block and input group of every plan tensor that is a decoder block's linear. Throws InputError for a GPTQ
// tensor outside them.
std::map<size_t, std::pair<uint32_t, BlockInput>> block_linears(const Plan& plan, const std::map<std::string, size_t>& index,
                                                                uint32_t blocks) {
  std::map<size_t, std::pair<uint32_t, BlockInput>> of;
  for (uint32_t l = 0; l < blocks; ++l)
    for (const auto& g : linear_groups(l))
      for (const auto& n : g.weights)
        if (const auto it = index.find(n); it != index.end()) of[it->second] = {l, g.input};
  for (size_t i = 0; i < plan.tensors.size(); ++i)
    if (plan.tensors[i].gptq && !of.count(i))
      throw InputError(fmt::format("tensor '{}': GPTQ from calibration text covers the decoder blocks' linears only",
                                   plan.tensors[i].name));
  return of;
}

std::map<std::string, size_t> index_by_name(const Plan& plan) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < plan.tensors.size(); ++i) index[plan.tensors[i].name] = i;
  return index;
}

}  // namespace

BlockQuantizer::BlockQuantizer(const Plan& plan, const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                               BlockByBlockOptions opts, std::function<void(const BlockProgress&)> progress)
    : plan_(plan), pass_(model, windows, opts), float_inputs_(opts.float_inputs), progress_(std::move(progress)),
      start_(std::chrono::steady_clock::now()) {
  index_ = index_by_name(plan);
  for (const auto& [i, group] : block_linears(plan, index_, pass_.block_count())) block_of_[i] = group.first;
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
      // Sequentially, every group after q/k/v reads inputs that the block's scaled norms and linears computed.
      const HessianOf of = float_inputs_ || g.input == BlockInput::AttnQkv ? HessianOf::OriginalInputs : HessianOf::StoredInputs;
      q = quantize_tensor_gptq(t, *plan_.config.gptq, *H, tokens, plan_.config.threads, {}, of);
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

SharedHessianQuantizer::SharedHessianQuantizer(const Plan& plan, SharedHessians& shared, size_t consumer)
    : plan_(plan), shared_(shared), consumer_(consumer) {
  try {
    if (plan.config.awq) throw std::logic_error("SharedHessianQuantizer: AWQ's scales change the inputs GPTQ sees");
    for (const auto& [i, group] : block_linears(plan, index_by_name(plan), shared.block_count()))
      if (plan.tensors[i].gptq) group_of_[i] = group;
  } catch (...) {
    shared_.leave(consumer_);
    throw;
  }
}

SharedHessianQuantizer::~SharedHessianQuantizer() { shared_.leave(consumer_); }

std::optional<QuantizedTensor> SharedHessianQuantizer::take(size_t i) {
  const auto g = group_of_.find(i);
  if (g == group_of_.end()) return std::nullopt;
  const auto H = shared_.get(consumer_, g->second.first, g->second.second);
  if (H->tokens == 0) throw std::logic_error("SharedHessianQuantizer: a group without inputs");
  const auto t0 = std::chrono::steady_clock::now();
  QuantizedTensor q = quantize_tensor_gptq(plan_.tensors[i], *plan_.config.gptq, H->hessian, H->tokens, plan_.config.threads);
  q.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return q;
}

}  // namespace qz
