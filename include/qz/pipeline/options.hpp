// What the user asked for: method, target format, per-tensor overrides, threads.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace qz {

enum class MethodKind {
  Rtn,        // the target format's own round-to-nearest quantizer (--type)
  Absmax,     // symmetric integer grid, round-to-nearest
  Zeropoint,  // asymmetric integer grid, round-to-nearest
  Gptq,       // GPTQ error feedback into the target format (needs calibration activations)
  Nf4,        // bitsandbytes' block-wise NormalFloat-4 (with double quantization by default)
  Fp4,        // bitsandbytes' block-wise FP4 (E2M1)
  Awq,        // AWQ scaling and clipping folded into the model, then the target format's round-to-nearest
  AwqGptq,    // AWQ scaling folded into the model, then GPTQ on the scaled weights
};

inline bool uses_gptq(MethodKind m) { return m == MethodKind::Gptq || m == MethodKind::AwqGptq; }
inline bool uses_awq(MethodKind m) { return m == MethodKind::Awq || m == MethodKind::AwqGptq; }

struct TensorTypeOverride {
  std::string pattern;  // ECMAScript regex searched in the tensor name
  std::string type;     // a format name
  std::regex re;
};

struct QuantizeOptions {
  MethodKind method = MethodKind::Rtn;
  std::string type;       // --type: a format name; empty means Q8_0 for --method rtn
  int bits = 4;           // absmax / zeropoint
  int group_size = 128;   // > 0: groups of that many input columns; -1: per output row; 0: per tensor
  std::vector<TensorTypeOverride> tensor_types;  // first match wins
  bool pure = false;         // --pure: no per-tensor mix choices, every weight gets the base type
  bool no_fallback = false;  // --no-fallback: a row length the type cannot store is an error
  bool has_imatrix = false;  // an importance matrix is given (changes some mix choices)
  unsigned threads = 0;   // 0: all hardware threads

  // NF4 / FP4
  size_t nf4_blocksize = 64;   // --group-size for nf4/fp4
  bool double_quant = true;    // --double-quant / --no-double-quant

  // GPTQ
  double damp = 0.01;               // --damp: fraction of mean(diag H) added to the diagonal
  int block_size = 128;             // --block-size: lazy-batch width
  bool act_order = false;           // --act-order (implies static groups)
  bool static_groups = false;       // --static-groups: grids fitted up front on the original weights
  bool symmetric = false;           // --sym / --asym for integer grids (default asymmetric, as the reference)
  bool allow_missing_calib = false; // --allow-missing-calib: layers without data fall back to RTN
  bool compare_rtn = false;         // --compare-rtn: also measure RTN's output error on the calibration data

  // AWQ
  bool awq_duo_scaling = false;     // --awq-duo-scaling: s = mean|x|^a / mean|w|^(1-a)
  size_t awq_tokens = 512;          // --awq-tokens: calibration tokens the searches measure errors on
  std::optional<bool> awq_clip;     // --awq-clip / --no-awq-clip; default on for awq, off for awq+gptq
  bool awq_clip_enabled() const { return awq_clip.value_or(method == MethodKind::Awq); }

  unsigned effective_threads() const;
};

std::string method_name(MethodKind m);
// Parses "absmax", "zeropoint", "rtn"; throws UsageError listing the valid names.
MethodKind parse_method(const std::string& s);
// Parses "PATTERN=TYPE"; throws UsageError for a bad regex or a missing '='.
TensorTypeOverride parse_tensor_type_override(const std::string& s);

}  // namespace qz
