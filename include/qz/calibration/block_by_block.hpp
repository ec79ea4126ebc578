// Calibration block by block, as the GPTQ reference runs it (llama_sequential, "true sequential"): the engine embeds
// every calibration window once, then for each decoder block in turn
//   1. shows the observer the input q/k/v share (the normed states); the observer quantizes q, k, v and gives back
//      the values they are stored as, which replace them in the block;
//   2. runs the attention with the quantized q/k/v for o_proj's input, then 3. the quantized o_proj and the norm
//      for gate/up's input, then 4. silu(gate) * up with quantized gate/up for down_proj's input;
//   5. finishes the fully quantized block: its outputs are the next block's inputs.
// (The reference runs the whole layer for every group; each stage here computes only what the next input needs,
// about one block run in all: the same inputs.)
// With `float_inputs` every input comes from the float model instead (the old behaviour, for comparison): one run
// per block shows all four inputs, and the block's outputs are the float block's.
// Windows are run in fixed batches of whole sequences (never split by the thread count), so every statistic is the
// same for any thread count. Held in memory: the hidden states of every window (float32, or bf16 with
// `bf16_states`: the states after a block's quantized attention too), within a block o_proj's input for every
// window as well, one batch's activations, and the weights of the block being run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qz/engine/model_weights.hpp"
#include "qz/engine/transformer.hpp"

namespace qz {

// The linears of a block grouped by the input they read, in the order their inputs are computed.
enum class BlockInput { AttnQkv, AttnOutput, FfnGateUp, FfnDown };
struct LinearGroup {
  uint32_t block = 0;
  BlockInput input = BlockInput::AttnQkv;
  std::vector<std::string> weights;  // GGUF names, e.g. blk.3.attn_q.weight
};
// The four groups of block `block`, in order.
std::vector<LinearGroup> linear_groups(uint32_t block);
// The group's input in what run_block saw.
const std::vector<float>& group_input(const BlockInputs& seen, BlockInput input);

class BlockObserver {
 public:
  virtual ~BlockObserver() = default;
  // One batch of the group's input: `tokens` rows of `columns` floats. Called for every batch, in order.
  virtual void observe(const LinearGroup& group, const float* x, size_t tokens, size_t columns) = 0;
  // After the last batch: the values the group's weights are stored as (GGUF name, tensor in GGUF layout), which
  // replace them for the rest of the pass; an empty list leaves the block as it is.
  virtual std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup& group) = 0;
};

struct BlockByBlockOptions {
  unsigned threads = 1;
  size_t batch_tokens = 4096;  // windows per batch: as many whole windows as fit (at least one)
  bool float_inputs = false;   // every input from the float model (see the top of this file)
  bool bf16_states = false;    // keep the hidden states between blocks as bf16 (half the memory)
};

class BlockByBlock {
 public:
  BlockByBlock(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows, BlockByBlockOptions opts);
  ~BlockByBlock();
  uint32_t block_count() const;
  uint32_t next_block() const { return next_; }
  uint64_t tokens() const { return tokens_; }
  // Runs the next block's groups through `observer` and advances the hidden states past it.
  void run_next_block(BlockObserver& observer);

 private:
  struct Batch;
  const ModelWeights& model_;
  OverlayWeights quantized_;
  Transformer float_engine_, quantized_engine_;
  BlockByBlockOptions opts_;
  std::vector<Batch> batches_;
  uint32_t next_ = 0;
  uint64_t tokens_ = 0;
};

}  // namespace qz
