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

// Quantizes every tensor of the plan into `output`. On any error nothing is left at `output`.
Report quantize_to_gguf(const Checkpoint& ckpt, const Plan& plan, const std::filesystem::path& output, bool overwrite,
                        ProgressSink* progress = nullptr);

}  // namespace qz
