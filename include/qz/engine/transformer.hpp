// The forward pass of the LLaMA family as the model tables describe it (LLaMA, Mistral, Qwen2): token embeddings,
// RMSNorm, RoPE (llama.cpp's layouts: adjacent pairs on the permuted q/k rows of LLaMA-family files, halves for
// Qwen2; linear, llama3 and yarn rope_scaling: rope.hpp), grouped-query attention with a causal mask, SwiGLU, q/k/v biases, tied output head.
// Float32. The linears run over every token of every sequence at once, as single-threaded OpenBLAS sgemm calls on
// fixed blocks of output columns shared out over the threads; attention is shared out per (sequence, head), each
// writing its own slice: the logits do not depend on the thread count (tested bit for bit). Weights are read one
// decoder block at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "qz/engine/model_weights.hpp"

namespace qz {

// The hidden states of a batch of sequences between blocks: every token of every sequence, row-major [tokens][dim].
struct HiddenStates {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<size_t> start;  // first row of each sequence
  std::vector<float> x;
  std::vector<float> rope_cos, rope_sin;  // [position][head_dim / 2], for the longest sequence (made by embed)
  size_t rows() const { return start.empty() ? 0 : start.back() + sequences.back().size(); }
};

// The inputs the linears of one block saw, row-major [tokens][in] over the batch (q/k/v share theirs, as gate/up).
struct BlockInputs {
  std::vector<float> attn_qkv, attn_output, ffn_gate_up, ffn_down;
};

class Transformer {
 public:
  // Throws InputError for a model the engine cannot run (an unknown rope scaling, missing tensors, bad shapes).
  Transformer(const ModelWeights& weights, unsigned threads);
  // The logits of every position of every sequence ([tokens][vocab] per sequence, row-major), each sequence run on
  // its own from position 0. Throws InputError for a token id outside the vocabulary.
  std::vector<std::vector<float>> logits(const std::vector<std::vector<int32_t>>& sequences) const;
  size_t vocab_size() const { return vocab_; }

  // The same pass in steps, for calibration block by block: the embeddings, then block `layer` on the hidden states
  // (with the inputs each linear saw, when `seen` is given; the caller may change the weights between blocks), then
  // the head.
  HiddenStates embed(const std::vector<std::vector<int32_t>>& sequences) const;
  void run_block(uint32_t layer, HiddenStates& h, BlockInputs* seen = nullptr) const;
  std::vector<std::vector<float>> head(const HiddenStates& h) const;

  // The parts of a block, with the weights given (GGUF layout; q/k/v biases are the model's), for AWQ's searches on
  // a module's output: the attention output (o_proj's output, before the residual) for the normed inputs `h` of
  // the rows of `hs` (o_proj's input into `o_input` when given); the MLP output for normed inputs (silu(gate) * up
  // into `act` when given); the block's norms.
  std::vector<float> attention(uint32_t layer, const HiddenStates& hs, const std::vector<float>& h, const FloatTensor& wq,
                               const FloatTensor& wk, const FloatTensor& wv, const FloatTensor& wo,
                               std::vector<float>* o_input = nullptr) const;
  std::vector<float> mlp(const std::vector<float>& h, size_t rows, const FloatTensor& wg, const FloatTensor& wu,
                         const FloatTensor& wd, std::vector<float>* act = nullptr) const;
  std::vector<float> attn_norm(uint32_t layer, const HiddenStates& hs) const;
  // The same in smaller steps (calibration block by block): attention without o_proj (o_proj's input), silu(gate) *
  // up (down_proj's input), and one linear without bias.
  std::vector<float> attention_mix(uint32_t layer, const HiddenStates& hs, const std::vector<float>& h,
                                   const FloatTensor& wq, const FloatTensor& wk, const FloatTensor& wv) const;
  std::vector<float> mlp_activation(const std::vector<float>& h, size_t rows, const FloatTensor& wg, const FloatTensor& wu) const;
  std::vector<float> project(const std::vector<float>& x, size_t rows, const FloatTensor& w) const;
  std::vector<float> ffn_norm(uint32_t layer, const std::vector<float>& x, size_t rows) const;

 private:
  const ModelWeights& w_;
  unsigned threads_;
  size_t vocab_ = 0, dim_ = 0;
};

}  // namespace qz
