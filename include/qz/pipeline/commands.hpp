// The pipeline's public API: one function per `quantize` subcommand. The CLI (tools/quantize) parses options into
// these requests, calls one function and prints what it returns; everything else happens here.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qz/calibration/calibration_text.hpp"
#include "qz/engine/perplexity.hpp"
#include "qz/model/demo_checkpoint.hpp"
#include "qz/pipeline/awq_pass.hpp"
#include "qz/pipeline/block_quantizer.hpp"
#include "qz/pipeline/options.hpp"
#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/quantize.hpp"
#include "qz/pipeline/report.hpp"

namespace qz {

class SharedCalibration;

// `quantize INPUT... -o OUTPUT`
struct QuantizeJob {
  std::vector<std::filesystem::path> inputs;  // a checkpoint directory, or safetensors files
  std::filesystem::path output;
  QuantizeOptions options;
  std::vector<std::filesystem::path> calib;  // calibration: activation files, or text (calibration_text.hpp)
  CalibSampling sampling;                    // text: --calib-samples, --calib-seqlen, --calib-seed
  bool calib_float_inputs = false;           // text: every layer's inputs from the float model (--calib-float-inputs)
  bool calib_bf16_states = false;            // text: hidden states kept as bf16 between blocks
  bool awq_linear_objective = false;         // text: AWQ's scales on the linears' outputs, not their module's
  std::filesystem::path imatrix;             // an importance matrix, if any
  std::string output_format = "gguf";        // or "bnb"
  bool dry_run = false;
  bool force = false;
  // Set by a batch for outputs that share one calibration capture (see open_shared_calibration): the capture, and
  // this output's place among those sharing it.
  std::shared_ptr<SharedCalibration> shared_calibration;
  size_t shared_index = 0;
};

// What the run tells its caller as it goes, all from the calling thread.
struct QuantizeEvents {
  std::function<void(const std::string&)> warn;  // an option ignored, a tensor without data, a fallback ...
  std::function<void(const std::string&)> note;  // a choice the user did not spell (a grid stored as a llama.cpp type)
  std::function<void(const Plan&)> planned;      // the plan, before any work (a dry run stops here)
  AwqProgress awq;                               // each AWQ search
  std::function<void(const AwqReport&)> awq_done;
  ProgressSink* progress = nullptr;              // each tensor
  std::function<void(const BlockProgress&)> block;  // each decoder block of a pass on calibration text
};

// Opens the inputs, plans, runs AWQ when asked, quantizes into a temporary file renamed onto the output, and returns
// the report (the plan's report for a dry run). UsageError / InputError say what is wrong and leave nothing behind.
Report run_quantize(const QuantizeJob& job, const QuantizeEvents& events = {});

// Outputs of one model whose calibration can be captured once for all of them: GPTQ (without AWQ) on calibration
// text with every input from the float model (--calib-float-inputs), the same model, text, sampling and state
// precision. Their Hessians do not depend on the output's storage, so one pass of the engine serves them all
// (calibration/shared_hessians.hpp). Returns what such jobs have in common, or "" for a job that cannot share
// (sequential calibration: each output's inputs come from its own quantized blocks; AWQ; activation files).
std::string shared_calibration_key(const QuantizeJob& job);
// The capture `outputs` jobs with first's key share: the model opened, the text read and sampled, the windows
// embedded once. Run the jobs concurrently (one thread each, job.shared_index = 0 .. outputs-1): they go through the
// blocks together, each block run once, and each output is byte-identical to the one run_quantize makes alone.
std::shared_ptr<SharedCalibration> open_shared_calibration(const QuantizeJob& first, size_t outputs);

// Signals remove the temporary outputs (exit 128 + signal) and an input truncated while it is read is an error
// naming it (io/fault_cleanup.hpp). Called once at start.
void install_fault_handlers_for_cli();

// Throws UsageError with a pointer to -o / --type when `inputs` look like llama-quantize's positional form
// (`quantize IN.gguf OUT.gguf Q4_K_M 4`): an input after the first that names a type and is not a file.
void check_not_llama_quantize_form(const std::vector<std::string>& inputs, bool has_output);

// The mixes and the format table's rows (fixed types and families), for --help.
std::string describe_storage_types();

// `quantize inspect FILE`: the file's metadata and tensor table.
std::string inspect_gguf(const std::filesystem::path& file);

// `quantize dequantize FILE -o OUT`: to safetensors of `dtype` (f32, f16, bf16), or to an all-F32 GGUF when OUT
// ends in .gguf. Returns the number of tensors written.
size_t run_dequantize(const std::filesystem::path& input, const std::filesystem::path& output, const std::string& dtype,
                      bool force);

// `quantize imatrix MODEL --calib F... -o OUT`: llama.cpp's GGUF imatrix from calibration activations, or from one
// text file (.txt/.jsonl/.json) run through the model as llama-imatrix runs it: the text tokenized once (BOS first),
// consecutive chunks of `ctx` tokens each with BOS first, at most `chunks` (0: all).
struct ImatrixJob {
  std::filesystem::path model;
  std::vector<std::filesystem::path> calib;
  std::filesystem::path output;
  bool force = false;
  size_t ctx = 512;
  size_t chunks = 0;
  unsigned threads = 0;
  std::function<void(uint32_t block, uint32_t blocks)> progress;
};
struct ImatrixResult {
  size_t entries = 0;
  std::vector<std::string> missing;  // weights without calibration activations
  size_t chunks = 0;                 // text: chunks of ctx tokens run
  uint64_t tokens = 0;               // text: tokens of the text
};
ImatrixResult run_imatrix(const ImatrixJob& job);

// `quantize tokenize MODEL --text FILE`: the ids the model reads for the text (BOS first when it adds one), with
// their pieces, as llama.cpp's llama-tokenize prints them.
struct TokenizeResult {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
};
TokenizeResult run_tokenize(const std::filesystem::path& model, const std::filesystem::path& text_file);

// `quantize eval MODEL (--text FILE | --tokens FILE) [--ctx N] [--chunks N] [--base MODEL]`: perplexity as
// llama-perplexity computes it (engine/perplexity.hpp), of a checkpoint or a GGUF file, with KL divergence against
// a base model. --text is tokenized with the model's tokenizer (exactly one trailing newline dropped, as
// llama-perplexity reads -f); --tokens is a JSON list of ids or raw little-endian uint32 (.u32).
struct EvalJob {
  std::filesystem::path model, text, tokens, base, tokenizer;  // tokenizer: a checkpoint directory (for GGUF models)
  size_t ctx = 512, chunks = 0;
  unsigned threads = 0;
};
struct EvalResult {
  PerplexityResult ppl;
  size_t tokens = 0;
  double seconds = 0.0, tokens_per_second = 0.0;  // forward passes of the evaluated model (and base)
};
EvalResult run_eval(const EvalJob& job, const std::function<void(size_t done, size_t total, double ppl)>& progress = {});
nlohmann::json to_json(const EvalJob& job, const EvalResult& r);

// `quantize make-demo DIR`: the demo checkpoint and its calibration activations (DIR/calib.safetensors).
void run_make_demo(const std::filesystem::path& dir, const DemoConfig& cfg);

}  // namespace qz
