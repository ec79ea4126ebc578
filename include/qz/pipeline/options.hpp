// What the user asked for, as typed: the method, the storage type and the settings of each method. Nothing here is
// resolved or checked; quantize_config.hpp turns it, once, into the typed configurations the stages take. A setting
// left unset (nullopt) takes its method's default, and a setting given where it does nothing is an error or a
// warning that says why.
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace qz {

// How values are decided. The storage is a separate choice (--type, or the spellings below).
enum class Method {
  Rtn,      // the target format's own round-to-nearest quantizer
  Gptq,     // GPTQ error feedback into the target format (needs calibration activations)
  Awq,      // AWQ scaling and clipping folded into the model, then round-to-nearest
  AwqGptq,  // AWQ scaling folded into the model, then GPTQ on the scaled weights
};

// --method absmax / zeropoint / nf4 / fp4: round-to-nearest into a storage type spelled by --bits and --group-size
// (`--method absmax --bits 4 -g 128` is `--type int4_sym_g128`; `--method nf4 -g 64` is `--type nf4_b64_dq`).
enum class TypeSpelling { None, Absmax, Zeropoint, Nf4, Fp4 };

struct TensorTypeOverride {
  std::string pattern;  // ECMAScript regex searched in the tensor name
  std::string type;     // a format name
  std::regex re;
};

struct QuantizeOptions {
  Method method = Method::Rtn;
  TypeSpelling spelling = TypeSpelling::None;
  std::string type;                 // --type: a mix or a format name; empty: Q8_0, or the grid of --bits/-g
  std::optional<int> bits;          // integer grids: 2..8 (default 4)
  std::optional<int> group_size;    // integer grids: > 0 columns per group (128), -1 per row, 0 per tensor;
                                    // NF4/FP4: block size (64)
  std::optional<bool> symmetric;    // integer grids under gptq/awq: --sym / --asym (default asymmetric)
  std::optional<bool> double_quant; // NF4/FP4 (default on)

  // Per-tensor choices, as llama-quantize spells them.
  std::vector<TensorTypeOverride> tensor_types;  // --tensor-type PATTERN=TYPE, first match wins
  std::string output_tensor_type;                // --output-tensor-type
  std::string token_embedding_type;              // --token-embedding-type
  bool leave_output_tensor = false;              // --leave-output-tensor: the output head keeps its float type
  std::vector<std::string> include_weights;      // --include-weights: imatrix only for names containing these
  std::vector<std::string> exclude_weights;      // --exclude-weights: no imatrix for names containing these
  bool pure = false;                             // --pure: no per-tensor mix choices
  bool no_fallback = false;                      // --no-fallback: a row length the type cannot store is an error

  // GPTQ
  std::optional<double> damp;       // fraction of mean(diag H) added to the diagonal (0.01)
  std::optional<int> block_size;    // lazy-batch width (128)
  bool act_order = false;
  bool static_groups = false;
  std::optional<bool> gptq_weighted_fit;  // grids fitted weighting by diag(H) (on)
  std::optional<int> gptq_refine;         // rounds of the refinement after the pass (2; 0 none)
  bool compare_rtn = false;
  bool allow_missing_calib = false;  // GPTQ and AWQ: layers without data are rounded to nearest / left unscaled

  // AWQ
  std::optional<bool> awq_duo_scaling;  // (on for awq+gptq, off for awq)
  std::optional<size_t> awq_tokens;     // (512)
  std::optional<bool> awq_clip;         // (on for awq, off for awq+gptq)

  // GGUF input and output, as llama-quantize spells them.
  bool allow_requantize = false;          // --allow-requantize: a quantized GGUF input is decoded, then quantized
  std::vector<std::string> override_kv;   // --override-kv KEY=TYPE:VALUE (TYPE int, float, bool or str)
  std::string split_max_size;             // --split-max-size 4G: write a split GGUF (gguf-split's naming and keys)
  size_t split_max_tensors = 0;           // --split-max-tensors N
  std::string max_shard_size = "5G";      // --max-shard-size: checkpoint outputs (gptq) shard past this, as HF does

  unsigned threads = 0;  // 0: all hardware threads
};

// "rtn", "gptq", "awq", "awq+gptq", or a storage spelling ("absmax", "zeropoint", "nf4", "fp4", which mean rtn).
// Throws UsageError listing the known names.
void set_method(QuantizeOptions& o, const std::string& name);
std::string method_name(Method m);
inline bool uses_gptq(Method m) { return m == Method::Gptq || m == Method::AwqGptq; }
inline bool uses_awq(Method m) { return m == Method::Awq || m == Method::AwqGptq; }

// Parses "PATTERN=TYPE"; throws UsageError for a bad regex or a missing '='.
TensorTypeOverride parse_tensor_type_override(const std::string& s);

}  // namespace qz
