// What the methods need, computed by the engine on calibration windows of the float model (block_by_block.hpp with
// float inputs): llama-imatrix's importance matrix, and AWQ's activations per scaling group.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "qz/calibration/block_by_block.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/methods/awq.hpp"

namespace qz {

// llama-imatrix's chunks (../shared/reference/ENGINE_NOTES.md §2.1): consecutive windows of `ctx` tokens of the
// stream (the tail dropped), at most `max_chunks` (0: all), each window's first token replaced by BOS when given.
// Throws InputError when the stream holds fewer than 2 * ctx tokens, as llama-imatrix does.
std::vector<std::vector<int32_t>> imatrix_chunks(const std::vector<int32_t>& tokens, size_t ctx, size_t max_chunks,
                                                 std::optional<int32_t> bos);

// llama-imatrix's statistic on the windows: for every linear of every block (blk.N.attn_q.weight ...), the sum over
// tokens of x_j^2 per input column, accumulated in float, and the token count. chunk_count / chunk_size are the
// windows and their length.
Imatrix imatrix_from_windows(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows, unsigned threads,
                             const std::function<void(uint32_t block, uint32_t blocks)>& progress = {});

// AWQ's activations of each block's groups from the float model, made block by block as they are asked for (blocks in
// increasing order: apply_awq's order). mean |x| over every token and an evenly strided sample of `max_tokens`.
class EngineAwqActivations {
 public:
  EngineAwqActivations(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows, size_t max_tokens,
                       unsigned threads);
  ~EngineAwqActivations();
  // Throws std::logic_error for a block before one already run.
  AwqActivations get(uint32_t block, BlockInput input);
  uint64_t tokens() const;
  // AutoAWQ's module objective for a group of block `block` that feeds a module: q/k/v (the attention output, with
  // the float o_proj) and gate/up (the MLP output, with the float down_proj), on the first windows holding at least
  // `max_tokens` tokens (whole windows: attention needs them), the float model's hidden states. `weights` names the
  // group's linears (GGUF names) in the order the loss receives them. Empty for o_proj and down_proj, whose
  // module is the linear itself.
  AwqModuleLoss module_loss(uint32_t block, BlockInput input, const std::vector<std::string>& weights);
  uint64_t module_tokens() const { return probe_.rows(); }

 private:
  struct Observer;
  const ModelWeights& model_;
  std::unique_ptr<BlockByBlock> pass_;
  std::unique_ptr<Observer> observer_;
  uint32_t have_ = UINT32_MAX;  // the block whose activations are held
  Transformer probe_engine_;
  HiddenStates probe_;           // the module windows' hidden states before block probe_block_
  uint32_t probe_block_ = 0;
};

}  // namespace qz
