// The options resolved once into typed configurations: the storage target, the per-tensor rules, and the settings
// of GPTQ and AWQ when the method uses them. The planner and every later stage take these, never the option bag.
// Resolution checks every combination: a setting that contradicts the chosen storage is a UsageError, a setting of
// a method that is not used is a warning that says it is ignored and why.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qz/formats/format.hpp"
#include "qz/io/gguf.hpp"
#include "qz/io/gguf_split.hpp"
#include "qz/methods/gptq.hpp"
#include "qz/pipeline/mixes.hpp"
#include "qz/pipeline/options.hpp"

namespace qz {

// What every weight is stored as, unless a per-tensor rule says otherwise: a llama-quantize mix or one format.
struct TargetConfig {
  std::string name;         // the mix or format name the file and the report show
  const Mix* mix = nullptr;
  std::string format_name;  // a single format (for per-row / per-tensor grids, resolved per row length)
  std::string why;          // the reason the plan gives
  std::string stored_as;    // an integer grid held exactly by a llama.cpp type: that type's name ("" otherwise)
  // (key, value) pairs of how the format was spelled, for the file's metadata: bits, group size, ...
  std::vector<std::pair<std::string, GgufValue>> settings;
  FormatPtr format_for(size_t row_length) const;  // the single format for rows of that length
};

// Per-tensor rules, llama-quantize's flags.
struct TensorRules {
  std::vector<TensorTypeOverride> overrides;  // --tensor-type, first match wins
  std::string output_type;                     // --output-tensor-type
  std::string embedding_type;                  // --token-embedding-type
  bool leave_output = false;                   // --leave-output-tensor
  bool pure = false;
  bool no_fallback = false;
};

struct GptqSettings {
  GptqConfig config;
  bool compare_rtn = false;
  bool allow_missing_calib = false;
};

struct AwqSettings {
  bool duo_scaling = false;
  size_t tokens = 512;
  bool clip = true;
  bool allow_missing_calib = false;
};

// Which imatrix entries are used (--include-weights / --exclude-weights: substrings of the GGUF tensor name).
struct ImatrixFilter {
  std::vector<std::string> include, exclude;
  bool uses(const std::string& gguf_name) const;
};

struct QuantizeConfig {
  Method method = Method::Rtn;
  TargetConfig target;
  TensorRules rules;
  std::optional<GptqSettings> gptq;  // set when the method uses GPTQ
  std::optional<AwqSettings> awq;    // set when the method uses AWQ
  ImatrixFilter imatrix;
  unsigned threads = 1;
  bool allow_requantize = false;
  std::vector<GgufKv> metadata_overrides;  // --override-kv, applied last to the output's metadata
  GgufSplitLimits split;                   // --split-max-size / --split-max-tensors
  uint64_t max_shard_bytes = 5000000000;   // --max-shard-size (checkpoint outputs)
  std::vector<std::string> warnings;  // settings that are ignored, and why
};

// Parses llama-quantize's --override-kv KEY=TYPE:VALUE: int (written as u32, as llama-quantize writes it), float
// (f32), bool (true / false) or str. Throws UsageError saying what is wrong.
GgufKv parse_override_kv(const std::string& spec);

// What else the run has, for the checks that depend on it.
struct ResolveContext {
  bool has_imatrix = false;
  bool has_calibration = false;
};

// Throws UsageError for unknown names, out-of-range values and contradicting settings.
QuantizeConfig resolve_options(const QuantizeOptions& o, const ResolveContext& ctx = {});

}  // namespace qz
