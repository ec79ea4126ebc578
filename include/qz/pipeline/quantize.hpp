// Runs a plan: streams tensor by tensor from the memory-mapped checkpoint into a GGUF file written through a
// temporary file. Only the tensor being worked on is in memory; rows are spread over threads and the output is
// byte-identical for any thread count.
#pragma once

#include <Eigen/Dense>
#include <filesystem>
#include <memory>
#include <optional>
#include <functional>
#include <vector>

#include "qz/pipeline/plan.hpp"
#include "qz/pipeline/report.hpp"

namespace qz {

// Progress callbacks, all made from the calling thread.
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void begin_tensor(size_t index, size_t count, const TensorPlan& t) = 0;
  virtual void advance(double fraction) = 0;  // of the current tensor, 0..1
  virtual void end_tensor(const TensorReport& r) = 0;
};

struct QuantizedTensor {
  std::vector<std::vector<uint8_t>> parts;  // the format's stored parts, in order (format.hpp)
  ErrorStats error;
  std::optional<GptqReport> gptq;
  // Set when the tensor was made ahead of the writer (a block pass on calibration text): the seconds its own
  // quantization took there (with its group's Hessian for the group's first tensor), not the wait for the pass.
  std::optional<double> seconds;
};

// Hessians of recent calibration inputs (q/k/v, and gate/up, share theirs), so each is accumulated once.
class HessianCache {
 public:
  std::shared_ptr<const Eigen::MatrixXd> get(const TensorPlan& t, unsigned threads, uint64_t* tokens);

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const Eigen::MatrixXd> h;
    uint64_t tokens;
  };
  std::vector<Entry> entries_;  // most recent last
};

// Quantizes one planned tensor (GPTQ when the plan says so, with cfg.gptq). Throws InputError naming the tensor and
// file for NaN or Inf values.
QuantizedTensor quantize_tensor(const TensorPlan& t, const QuantizeConfig& cfg, HessianCache* cache = nullptr,
                                const std::function<void(double)>& progress = {});

// Whose inputs a Hessian is of: the original model's (calibration files, float inputs; an AWQ transform's input
// scales are applied to it: H' = S^-1 H S^-1), or the stored model's (the block-by-block pass after a group's
// earlier layers are in place: AWQ's scales are already folded into the norms and linears that computed them).
enum class HessianOf { OriginalInputs, StoredInputs };

// GPTQ on one planned tensor with the Hessian of its inputs (2/N sum x x^T over `tokens` tokens).
QuantizedTensor quantize_tensor_gptq(const TensorPlan& t, const GptqSettings& settings, const Eigen::MatrixXd& hessian,
                                     uint64_t tokens, unsigned threads, const std::function<void(double)>& progress = {},
                                     HessianOf of = HessianOf::OriginalInputs);

// The values a quantized tensor is stored as, read back (rows x cols in output row order).
std::vector<float> stored_values(const TensorPlan& t, const QuantizedTensor& q);

// Tensors quantized elsewhere (block by block on the engine, pipeline/block_quantizer.hpp): take(i) gives plan
// tensor i's result, or nothing when the tensor is quantized the usual way.
class TensorProducer {
 public:
  virtual ~TensorProducer() = default;
  virtual std::optional<QuantizedTensor> take(size_t plan_index) = 0;
};

// Where the quantized tensors go, in plan order: a GGUF file (or split set), or a checkpoint directory
// (pipeline/gptq_export.hpp). Nothing is in place before commit().
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  virtual void write(const TensorPlan& t, const QuantizedTensor& q) = 0;
  virtual void commit() = 0;
  virtual uint64_t bytes() const = 0;                   // of everything written
  virtual std::vector<std::string> paths() const = 0;   // the files made, first the main one
};

// Quantizes every tensor of the plan into `sink` (those `producer` makes, from it).
Report quantize_into(const Checkpoint& ckpt, const Plan& plan, TensorSink& sink, ProgressSink* progress = nullptr,
                     TensorProducer* producer = nullptr);

// Quantizes every tensor of the plan into `output` (a split set with the plan's split limits). On any error nothing
// is left at `output`.
Report quantize_to_gguf(const Checkpoint& ckpt, const Plan& plan, const std::filesystem::path& output, bool overwrite,
                        ProgressSink* progress = nullptr, TensorProducer* producer = nullptr);

}  // namespace qz
