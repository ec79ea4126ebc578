// A transformers + bitsandbytes 4-bit checkpoint (`--output-format bnb`): the checkpoint directory again, with every
// linear layer's weight stored as bitsandbytes serializes a Params4bit, so `from_pretrained` loads it with no
// re-quantization. For a linear weight P.weight ([out, in]):
//   P.weight                                   uint8 [ceil(n/2), 1]  packed codes (first value in the high nibble)
//   P.weight.absmax                            uint8 [blocks] (double quantization) or float32 [blocks]
//   P.weight.quant_map                         float32 [16]          the NF4 (or FP4) code
//   P.weight.nested_absmax                     float32 [ceil(blocks/256)]   (double quantization)
//   P.weight.nested_quant_map                  float32 [256]         the dynamic map (double quantization)
//   P.weight.quant_state.bitsandbytes__nf4     uint8 [256]           JSON: quant_type, blocksize, dtype, shape,
//                                                                    nested_blocksize, nested_dtype, nested_offset
//                                                                    (space-padded to 256 bytes for streaming)
// Embeddings, norms and lm_head are copied unchanged (transformers keeps them out of bitsandbytes), and
// config.json gets the matching quantization_config. Tokenizer files are copied.
#pragma once

#include <filesystem>

#include "qz/io/checkpoint.hpp"
#include "qz/pipeline/options.hpp"
#include "qz/pipeline/report.hpp"

namespace qz {

// Throws UsageError unless the target is an NF4/FP4 type and `ckpt` is a directory with config.json.
Report export_bnb(const Checkpoint& ckpt, const QuantizeConfig& cfg, const std::filesystem::path& out_dir,
                  bool overwrite);

}  // namespace qz
