// A tiny LLaMA-shaped Hugging Face checkpoint made from a fixed seed: config.json, two safetensors shards and
// their model.safetensors.index.json. The README's demo and the tests quantize it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "qz/core/dtype.hpp"

namespace qz {

struct DemoConfig {
  int hidden = 256;
  int intermediate = 768;
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int vocab = 512;
  DType dtype = DType::BF16;
  uint64_t seed = 42;
  // "LlamaForCausalLM" (SentencePiece vocabulary), "Qwen2ForCausalLM" (q/k/v biases, byte-level BPE vocabulary) or
  // "Qwen3ForCausalLM" (per-head Q/K norms, no biases, byte-level BPE, head_dim stated in config.json).
  std::string architecture = "LlamaForCausalLM";
  int head_dim = 0;  // 0: hidden / heads; otherwise the attention's own head size (Qwen3's is not hidden / heads)
  // config.json's rope_scaling object as JSON text (e.g. Llama 3.1's llama3 scaling), empty for none.
  std::string rope_scaling;
};

// Writes the checkpoint into `dir` (created if needed; existing files of the same names are replaced).
void write_demo_checkpoint(const std::filesystem::path& dir, const DemoConfig& cfg = {});

// Writes synthetic calibration activations for the demo model (docs/calibration.md): per layer, inputs of
// q_proj (shared by k/v), o_proj, gate_proj (shared by up) and down_proj, F32 [tokens, in_features], with
// correlated channels and a few outlier channels, as real activations have.
void write_demo_calibration(const std::filesystem::path& file, const DemoConfig& cfg = {}, size_t tokens = 256);

// Writes a calibration text for the demo (docs/calibration.md): `sentences` short English sentences drawn from
// fixed word lists with a fixed seed, one paragraph per line.
void write_demo_calibration_text(const std::filesystem::path& file, size_t sentences = 400);

}  // namespace qz
