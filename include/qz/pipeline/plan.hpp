// The plan: for every input tensor, the format it will be stored in and why, and the resulting file size,
// decided before any work is done (--dry-run prints it; a real run follows it). make_plan resolves the options
// once (quantize_config.hpp); the plan carries the typed configuration the later stages use.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qz/calibration/calibration_set.hpp"
#include "qz/formats/format.hpp"
#include "qz/io/imatrix.hpp"
#include "qz/io/checkpoint.hpp"
#include "qz/model/architecture.hpp"
#include "qz/model/model_card.hpp"
#include "qz/model/tokenizer.hpp"
#include "qz/pipeline/quantize_config.hpp"
#include "qz/pipeline/tensor_source.hpp"

namespace qz {

struct TensorPlan : TensorSource {
  FormatPtr format;
  std::string reason;           // why this format
  bool fallback = false;        // the method's format did not fit the row length
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;    // all stored parts (format.hpp)
  std::shared_ptr<const std::vector<float>> importance;  // per-column imatrix values, when given
  bool gptq = false;                                    // quantized by GPTQ (else round-to-nearest)
  std::vector<CalibInput> calibration;                  // calibration entries for this weight (GPTQ)
  uint64_t numel() const { return static_cast<uint64_t>(rows) * cols; }
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

struct CalibrationUse {
  std::vector<std::string> files;  // file names
  std::string kind = "activations";  // calibration_text.hpp: activations, text, jsonl, json strings, json token ids
  uint64_t tokens = 0;             // tokens behind the first calibrated layer's inputs
  size_t windows = 0;              // text: the windows the engine runs
  bool block_by_block = false;     // text: inputs from the quantized earlier blocks (false: from the float model)
  std::string warning;             // text: fewer tokens than asked
  size_t shared_by = 0;            // text: outputs sharing one capture of it (a batch); 0 when made for this one alone
};

struct Plan {
  QuantizeConfig config;
  std::optional<ModelConfig> model;  // a model conversion (config.json, or a GGUF, of a supported architecture)
  const GgufFile* source_gguf = nullptr;  // a GGUF input: its metadata is carried into the output
  std::string model_unavailable;          // a GGUF input whose architecture the engine does not run: why
  std::optional<PackedScheme> packed;     // a GPTQ / AWQ checkpoint (config.json's quantization_config)
  std::optional<Vocabulary> vocab;   // its tokenizer
  std::optional<ModelCard> card;     // README.md front matter
  std::optional<ImatrixUse> imatrix;
  std::optional<CalibrationUse> calibration;
  std::optional<uint32_t> file_type;  // general.file_type of the chosen llama-quantize mix
  std::string source_name;            // general.name when there is no model config
  std::vector<TensorPlan> tensors;
  std::vector<SkippedTensor> skipped;
  uint64_t input_bytes = 0;    // bytes of the source tensors that are written
  uint64_t tensor_bytes = 0;   // bytes of tensor data in the output (without padding)
  uint64_t weights = 0;        // number of values written
  size_t fallbacks = 0;
  uint64_t fallback_bytes = 0;
  std::vector<std::string> calibration_missing;  // weights rounded to nearest / left unscaled for lack of data
  const std::string& target() const { return config.target.name; }
  double bits_per_weight() const {
    return weights ? 8.0 * static_cast<double>(tensor_bytes) / static_cast<double>(weights) : 0.0;
  }
};

// Resolves the options and decides every tensor's format (with an imatrix, attaches each tensor's importance; with
// GPTQ, its calibration inputs). Throws UsageError for bad options, InputError for tensors that cannot be written
// or an imatrix that does not fit. GPTQ and AWQ need `calib` (unless `plan_only`: a dry run plans without data);
// a 2-D weight without calibration data is an error unless --allow-missing-calib (then RTN); token embeddings, and
// an output head without data, are always rounded to nearest. With `text_calib` (calibration from text, run by the
// engine: pipeline/block_quantizer.hpp) GPTQ covers every decoder-block linear and the tensors are put in block
// order (others first), so that the writer takes them as the pass makes them.
Plan make_plan(const Checkpoint& ckpt, const QuantizeOptions& opts, const Imatrix* imatrix = nullptr,
               const std::string& imatrix_file = {}, const CalibrationSet* calib = nullptr, bool plan_only = false,
               const CalibrationUse* text_calib = nullptr);

}  // namespace qz
