// The forward pass of the LLaMA family as the model tables describe it (LLaMA, Mistral, Qwen2): token embeddings,
// RMSNorm, RoPE (llama.cpp's layouts: adjacent pairs on the permuted q/k rows of LLaMA-family files, halves for
// Qwen2; linear rope_scaling), grouped-query attention with a causal mask, SwiGLU, q/k/v biases, tied output head.
// Float32. The linears run over every token of every sequence at once, as single-threaded OpenBLAS sgemm calls on
// fixed blocks of output columns shared out over the threads; attention is shared out per (sequence, head), each
// writing its own slice: the logits do not depend on the thread count (tested bit for bit). Weights are read one
// decoder block at a time. Not run yet: llama3 / yarn rope scaling.
#pragma once

#include <cstdint>
#include <vector>

#include "qz/engine/model_weights.hpp"

namespace qz {

class Transformer {
 public:
  // Throws InputError for a model the engine cannot run (yarn rope scaling, missing tensors, bad shapes).
  Transformer(const ModelWeights& weights, unsigned threads);
  // The logits of every position of every sequence ([tokens][vocab] per sequence, row-major), each sequence run on
  // its own from position 0. Throws InputError for a token id outside the vocabulary.
  std::vector<std::vector<float>> logits(const std::vector<std::vector<int32_t>>& sequences) const;
  size_t vocab_size() const { return vocab_; }

 private:
  const ModelWeights& w_;
  unsigned threads_;
  size_t vocab_ = 0, dim_ = 0;
};

}  // namespace qz
