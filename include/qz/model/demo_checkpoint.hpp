// A tiny LLaMA-shaped Hugging Face checkpoint made from a fixed seed: config.json, two safetensors shards and
// their model.safetensors.index.json. The README's demo and the tests quantize it.
#pragma once

#include <cstdint>
#include <filesystem>

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
};

// Writes the checkpoint into `dir` (created if needed; existing files of the same names are replaced).
void write_demo_checkpoint(const std::filesystem::path& dir, const DemoConfig& cfg = {});

}  // namespace qz
