// Perplexity as llama.cpp's llama-perplexity computes it (../shared/reference/ENGINE_NOTES.md §1): the token stream
// cut into consecutive chunks of `ctx` tokens (the tail dropped), each chunk run on its own with its first token
// replaced by BOS when the model adds one, the logits from position ctx/2 on scoring the next token
// (ctx - 1 - ctx/2 per chunk); PPL = exp(mean NLL) with uncertainty sqrt(var / (n - 1)) * PPL. With a base model,
// llama-perplexity's --kl-divergence figures on the same positions: mean KL(base || model), its 99th percentile and
// how often both pick the same top token.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "qz/engine/transformer.hpp"

namespace qz {

struct PerplexityOptions {
  size_t ctx = 512;
  size_t max_chunks = 0;          // 0: all
  size_t sequences_per_pass = 8;  // chunks run together (memory: their activations)
  std::optional<int32_t> bos;     // replaces each chunk's first token when set
};

struct KlStats {
  double mean = 0.0, p99 = 0.0, max = 0.0;
  double top1_agreement = 0.0;  // fraction of scored positions where both models' top tokens agree
  double base_ppl = 0.0;        // the base model's own perplexity on the same positions
};

struct PerplexityResult {
  double ppl = 0.0, ppl_error = 0.0;
  size_t chunks = 0, scored = 0;
  std::vector<double> running_ppl;  // after each chunk, as llama-perplexity prints it
  std::optional<KlStats> kl;
};

// Throws InputError when the stream holds fewer than 2 * ctx tokens (as llama-perplexity).
PerplexityResult perplexity(const Transformer& model, const std::vector<int32_t>& tokens, const PerplexityOptions& o,
                            const Transformer* base = nullptr,
                            const std::function<void(size_t done, size_t total, double ppl)>& progress = {});

}  // namespace qz
