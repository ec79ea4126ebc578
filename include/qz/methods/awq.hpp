// AWQ (Lin et al., 2023): activation-aware scaling. For linear layers that read the same input X, find a
// per-input-channel scale s so that quantizing W diag(s) (and undoing s on the input side, folded into the previous
// norm or linear) loses the least output; then shrink each group's clipping range where that lowers the output
// error. Constants follow llm-awq / AutoAWQ (ANCHORS section 4): alpha over {0, 0.05, ..., 0.95},
// s = mean|x|^alpha (duo scaling: / (mean|w|^(1-alpha) + 1e-4)), clamped at 1e-4 and normalized by
// sqrt(max(s) min(s)); clipping tries max|w| * (1 - i/20) for i = 0..9, per output row and group.
// The error is measured on the group's module output when the caller can run the module (calibration from text:
// AutoAWQ's objective), else on the group's linear outputs; on at most `max_tokens` calibration tokens, in float32.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qz/formats/format.hpp"

namespace qz {

// One linear layer of a scaling group: weight rows x cols (row-major) and the format it will be stored in.
struct AwqLinear {
  const float* w = nullptr;
  size_t rows = 0;
  FormatPtr format;
};

struct AwqConfig {
  int grid = 20;             // alpha = i / grid for i < grid
  bool duo_scaling = false;  // AutoAWQ's duo scaling
  size_t max_tokens = 512;   // calibration tokens used by the searches (evenly strided)
  unsigned threads = 1;      // rows of the fake quantization and of the output products are shared out
};

// The calibration inputs of a scaling group as the searches use them: mean |x| per channel over every token, and an
// evenly strided sample of at most AwqConfig::max_tokens tokens (row-major, sample_tokens x cols) for the errors.
struct AwqActivations {
  size_t cols = 0;
  uint64_t tokens = 0;            // tokens behind mean_abs
  std::vector<double> mean_abs;   // per channel
  std::vector<float> sample;
  size_t sample_tokens = 0;
};

// Builds AwqActivations from tokens fed in order, in any number of pieces: mean |x| over all `total_tokens`, and
// the tokens i * total / n (i < n = min(total, max_tokens)) as the sample. The one strided sampler.
class AwqActivationBuilder {
 public:
  AwqActivationBuilder(size_t cols, uint64_t total_tokens, size_t max_tokens);
  void add(const float* x, size_t tokens);  // tokens x cols, the next ones in order
  AwqActivations finish();

 private:
  AwqActivations a_;
  uint64_t seen_ = 0;
  size_t next_ = 0;  // next sample index
};

// From activations in memory (tokens x cols).
AwqActivations awq_activations(const float* x, size_t tokens, size_t cols, size_t max_tokens);

struct AwqScaleResult {
  std::vector<float> scales;  // per input channel: multiply weight columns, divide the inputs
  double alpha = 0.0;         // best ratio (-1 when the search fell back to s = 1)
  double loss = 0.0;          // output MSE at the best alpha
  double loss_unscaled = 0.0; // output MSE at alpha = 0 (s = 1)
  bool fell_back = false;     // a non-finite loss: s = 1 kept
};

// Every linear must have x.cols columns.
AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const AwqActivations& x, const AwqConfig& cfg);

// AutoAWQ's objective (module2inspect) for groups whose linears feed a module: given each linear's fake-quantized
// weights Q(W diag(s)) diag(s)^-1 (rows x cols, row-major, in the order of `linears`), the mean squared error of the
// module's output (the attention output for q/k/v, the MLP output for gate/up) against the float module's, on
// calibration tokens. With it, the scale search minimizes that instead of the linears' own output error; x gives
// mean |x| only.
using AwqModuleLoss = std::function<double(const std::vector<std::vector<float>>& quantized)>;
AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const AwqActivations& x, const AwqConfig& cfg,
                                 const AwqModuleLoss& module_loss);
// The same from activations in memory (tokens x cols, row-major).
AwqScaleResult awq_search_scales(const std::vector<AwqLinear>& linears, const float* x, size_t tokens, size_t cols,
                                 const AwqConfig& cfg);

// Per output row and group of `group` columns, the clipping bound max|w| * (1 - i/20), i = 0..9, with the least
// output error on the calibration inputs (x, tokens x cols). w must already be scaled. Returns rows x (cols/group)
// bounds.
std::vector<float> awq_search_clip(const AwqLinear& linear, const float* x, size_t tokens, size_t cols, size_t group,
                                   const AwqConfig& cfg);
// The same on an already sampled x (x_tokens x cols; no further sampling).
std::vector<float> awq_search_clip_sampled(const AwqLinear& linear, const float* x, size_t x_tokens, size_t cols,
                                           size_t group, const AwqConfig& cfg);

// The clipping group of a format: its block (K-quants: the 32-value sub-block their scales cover), or the whole row
// for per-row and per-tensor grids.
size_t awq_clip_group(const Format& f, size_t cols);

}  // namespace qz
