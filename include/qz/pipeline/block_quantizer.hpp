// GPTQ from calibration text: the plan's decoder-block linears quantized block by block on the activations the
// engine computes (calibration/block_by_block.hpp), each group of linears on inputs from the blocks and groups
// quantized before it. GPTQ tensors get the Hessian of their group's input; every other linear of a block (a
// float type, round-to-nearest by the mix) is quantized as the plan says, so later inputs see exactly what the file
// stores. Results are made lazily, one block at a time, when the writer asks for a block's first tensor: with the
// plan in block order (make_plan sorts it so for text calibration) one block's results are held at a time.
// With AWQ (awq+gptq), the block runs as the file stores it once q/k/v are in place: the scaled norms and linears
// compute the later groups' inputs already divided by AWQ's scales, so their Hessians are used as they are, while
// q/k/v's (the normed states before the block's scaled norm is in place) get the scales applied.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>

#include "qz/calibration/block_by_block.hpp"
#include "qz/calibration/shared_hessians.hpp"
#include "qz/methods/hessian.hpp"
#include "qz/pipeline/quantize.hpp"

namespace qz {

struct BlockProgress {
  uint32_t block = 0, blocks = 0;  // block just done (0-based), of
  double seconds = 0.0;            // since the pass began
  double seconds_left = 0.0;       // estimated from the blocks so far
};

class BlockQuantizer final : public TensorProducer, private BlockObserver {
 public:
  BlockQuantizer(const Plan& plan, const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                 BlockByBlockOptions opts, std::function<void(const BlockProgress&)> progress = {});
  std::optional<QuantizedTensor> take(size_t plan_index) override;
  uint64_t tokens() const { return pass_.tokens(); }

 private:
  void observe(const LinearGroup& group, const float* x, size_t tokens, size_t columns) override;
  std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup& group) override;

  const Plan& plan_;
  BlockByBlock pass_;
  bool float_inputs_;
  std::function<void(const BlockProgress&)> progress_;
  std::map<std::string, size_t> index_;        // plan index by output (GGUF) name
  std::map<size_t, uint32_t> block_of_;        // block of every plan tensor the pass makes
  std::map<size_t, QuantizedTensor> done_;     // made, not yet taken
  std::map<BlockInput, HessianAccumulator> hessians_;  // of the groups being observed
  std::chrono::steady_clock::time_point start_;
};

// GPTQ from calibration text with every input from the float model (--calib-float-inputs), the Hessians taken from
// a capture that several outputs of the model share (calibration/shared_hessians.hpp; `consumer` is this output's
// place in it): the outputs BlockQuantizer makes with float inputs, byte for byte. Only the GPTQ tensors are made
// here (the writer quantizes the rest as usual); no AWQ (its scales change the inputs GPTQ sees). Leaves the
// capture when destroyed, so a failed output is no longer waited for.
class SharedHessianQuantizer final : public TensorProducer {
 public:
  SharedHessianQuantizer(const Plan& plan, SharedHessians& shared, size_t consumer);
  ~SharedHessianQuantizer() override;
  SharedHessianQuantizer(const SharedHessianQuantizer&) = delete;
  SharedHessianQuantizer& operator=(const SharedHessianQuantizer&) = delete;
  std::optional<QuantizedTensor> take(size_t plan_index) override;

 private:
  const Plan& plan_;
  SharedHessians& shared_;
  size_t consumer_;
  std::map<size_t, std::pair<uint32_t, BlockInput>> group_of_;  // block and input of every GPTQ tensor
};

}  // namespace qz
