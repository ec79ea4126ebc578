// RoPE's rotation angles per position and frequency, with the model's rope_scaling as llama.cpp runs it (ggml's
// rope with freq_scale, ext_factor and the YaRN correction dims; llama_context's attention factor):
//   theta_extrap(p, i) = p * base^(-2i / head_dim) / freq_factor_i          (freq_factor: llama3's rope_freqs, else 1)
//   none / llama3: theta = theta_extrap
//   linear:        theta = theta_extrap / factor
//   yarn:          theta = theta_interp * (1 - r_i) + theta_extrap * r_i,   theta_interp = theta_extrap / factor,
//                  r_i = 1 - clamp((i - low) / max(0.001, high - low), 0, 1) (1: extrapolate the high frequencies),
//                  low = floor(d(beta_fast)), high = ceil(d(beta_slow)) clamped to [0, head_dim - 1],
//                  d(b) = head_dim * ln(n_ctx_orig / (2 pi b)) / (2 ln base); cos and sin scaled by
//                  mscale = 1 + 0.1 ln(factor) (1 for factor <= 1), so attention logits grow by mscale^2.
// n_ctx_orig is rope_scaling's original_max_position_embeddings (GGUF rope.scaling.original_context_length), else
// the model's context length; beta_fast 32 and beta_slow 1 unless the config says otherwise.
#pragma once

#include <cstddef>
#include <vector>

#include "qz/model/architecture.hpp"

namespace qz {

struct RopeTable {
  std::vector<float> cos, sin;  // [position][head_dim / 2]
};

// Throws InputError for a rope_scaling type it does not know.
RopeTable rope_table(const ModelConfig& m, size_t positions);

}  // namespace qz
