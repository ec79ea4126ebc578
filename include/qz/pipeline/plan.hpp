// The plan: for every input tensor, the format it will be stored in and why, and the resulting file size,
// decided before any work is done (--dry-run prints it; a real run follows it).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/formats/nf4.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/safetensors.hpp"
#include "qz/model/architecture.hpp"
#include "qz/model/tokenizer.hpp"
#include "qz/pipeline/importance_fwd.hpp"
#include "qz/pipeline/options.hpp"

namespace qz {

// AWQ's folding, applied while a tensor is read (pipeline/awq_pass.hpp): weight columns times col_mul (the group's
// scales), rows divided by row_div (indexed by checkpoint row: the next group's scales, for v_proj and up_proj),
// 1-D tensors divided by col_div (norm weights, v's bias), then each (output row, group of clip_group columns)
// clamped to +-clip.
struct TensorTransform {
  std::vector<float> col_mul, row_div, col_div, clip;
  size_t clip_group = 0;
};

struct TensorPlan {
  const Checkpoint::Entry* source = nullptr;
  std::string name;             // name in the output file
  std::vector<uint64_t> shape;  // source shape, outermost first
  size_t rows = 0;              // product of all but the last dimension
  size_t cols = 0;              // row length (GGUF ne[0])
  FormatPtr format;
  std::string reason;           // why this format
  bool fallback = false;        // the method's format did not fit the row length
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  std::shared_ptr<const std::vector<float>> importance;  // per-column imatrix values, when given
  bool gptq = false;                                    // quantized by GPTQ (else round-to-nearest)
  std::vector<CalibInput> calibration;                  // GPTQ's calibration entries for this weight
  std::vector<uint32_t> row_order;  // source row of each output row (llama.cpp's q/k permutation), empty = same
  std::optional<Nf4Options> nf4;    // stored as bitsandbytes NF4/FP4 blocks (docs/formats.md), several GGUF tensors
  std::shared_ptr<TensorTransform> transform;  // AWQ scaling and clipping, if any
  const std::string& source_name() const { return source->tensor->name; }
  // GGUF ne of the stored tensor: the logical shape for llama.cpp types, [row bytes, rows...] for custom layouts.
  std::vector<uint64_t> stored_ne() const;
  std::vector<uint64_t> logical_ne() const;
};

struct SkippedTensor {
  std::string name;
  std::string reason;
};

struct ImatrixUse {
  std::string file;     // as given on the command line
  std::string dataset;  // first dataset named in the file
  uint32_t entries = 0;
  uint32_t chunks = 0;
  std::vector<std::string> missing;  // quantized tensors without an entry (quantized without importance)
};

struct Plan {
  std::optional<ModelConfig> model;  // a model conversion (config.json with a supported architecture)
  std::optional<Vocabulary> vocab;   // its tokenizer
  std::optional<ImatrixUse> imatrix;
  std::optional<uint32_t> file_type;  // general.file_type of the chosen llama-quantize mix
  std::string target;                 // what was asked for: a mix or a format name
  std::vector<TensorPlan> tensors;
  std::vector<SkippedTensor> skipped;
  uint64_t input_bytes = 0;    // bytes of the source tensors that are written
  uint64_t tensor_bytes = 0;   // bytes of tensor data in the output (without padding)
  uint64_t file_bytes = 0;     // size of the output file
  uint64_t weights = 0;        // number of values written
  size_t fallbacks = 0;
  uint64_t fallback_bytes = 0;
  std::vector<std::string> calibration_missing;  // GPTQ weights rounded to nearest for lack of data
  double bits_per_weight() const {
    return weights ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(weights) : 0.0;
  }
};

// Checks option combinations and names (UsageError) before anything is read.
void validate_options(const QuantizeOptions& opts);

struct Imatrix;
class CalibrationSet;

// Decides every tensor's format (and, with an imatrix, attaches each tensor's importance). Throws UsageError for
// bad options, InputError for tensors that cannot be written or an imatrix that does not fit.
// GPTQ needs `calib`: a 2-D weight without calibration data is an error unless --allow-missing-calib (then RTN);
// token embeddings, and an output head without data, are always rounded to nearest.
Plan make_plan(const Checkpoint& ckpt, const QuantizeOptions& opts, const Imatrix* imatrix = nullptr,
               const std::string& imatrix_file = {}, const CalibrationSet* calib = nullptr);

// Declares the output file: metadata and tensor infos, in plan order.
GgufWriter make_gguf_layout(const Plan& plan, const Checkpoint& ckpt, const QuantizeOptions& opts);

// Metadata keys of the project's custom layouts (docs/formats.md).
std::string custom_format_key(const std::string& tensor);  // "quantize.tensor.<name>.format"
std::string custom_shape_key(const std::string& tensor);   // "quantize.tensor.<name>.shape"
// The GGUF tensors of an NF4/FP4 weight besides `<name>` (its packed codes).
std::vector<std::string> nf4_companions(const std::string& tensor, const Nf4Options& o);

}  // namespace qz
