// A GPTQ checkpoint out (`--output-format gptq -o DIR`): the checkpoint directory again, in the AutoGPTQ / GPTQModel
// layout that transformers, vLLM and ExLlama load (the layout model/packed_linear.hpp reads, checkpoint_format
// "gptq": each zero stored minus one). Every linear of the decoder blocks that the plan rounds on an integer grid of
// 2, 3, 4 or 8 bits in groups (or one per row) becomes `<base>.qweight`, `.qzeros`, `.scales` (fp16) and `.g_idx`,
// with the plan's codes and scales, rows in the checkpoint's order; every other tensor is written as the checkpoint
// has it. config.json gets the quantization_config, quantize_config.json the same settings, and the tokenizer files
// are copied; past --max-shard-size (5G) of tensor data the safetensors are shards with their index, as
// save_pretrained writes them. A grid with a zero point of 0 cannot be stored as gptq (zero - 1 < 0): such a checkpoint is written as
// gptq_v2 (zeros as they are), which GPTQModel reads, with a warning.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"

namespace qz {

// Throws UsageError unless the plan's target is an integer grid of 2, 3, 4 or 8 bits and `ckpt` a Hugging Face
// directory (config.json); `warn` gets what the layout could not hold (a linear left unpacked, gptq_v2).
std::unique_ptr<TensorSink> make_gptq_checkpoint_sink(const Checkpoint& ckpt, const Plan& plan,
                                                      const std::filesystem::path& out_dir, bool overwrite,
                                                      std::function<void(const std::string&)> warn);

}  // namespace qz
