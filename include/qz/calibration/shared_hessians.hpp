// One capture of the float model's GPTQ Hessians for several outputs at once. With every input taken from the float
// model (block_by_block.hpp, float inputs), the Hessian of a block's group does not depend on how the output is
// stored, so several outputs of one model on the same calibration windows (GPTQ Q4_0 and Q4_K_M, 4 and 8 bits ...)
// can share one pass of the engine: each output (a consumer, in its own thread) asks for the Hessians of the groups
// it quantizes, in block order; the first to ask for a block runs it, and the others reuse what it made.
//
// Memory stays that of one output: a block's Hessians are dropped once every consumer still running has moved past
// the block, and a consumer waits rather than run a block more than one ahead of the slowest, so at most two blocks'
// Hessians are held. A consumer that finishes or fails leaves and is no longer waited for. The Hessians are those a
// single output's pass makes (the same accumulation, in the same order), so every output is byte-identical to the
// one made alone.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <Eigen/Dense>

#include "qz/calibration/block_by_block.hpp"

namespace qz {

struct GroupHessian {
  Eigen::MatrixXd hessian;  // 2/N sum x x^T of the group's input
  uint64_t tokens = 0;
};

class SharedHessians {
 public:
  // `opts.float_inputs` is implied. Embeds the windows (BlockByBlock's constructor); no block runs yet.
  SharedHessians(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows, BlockByBlockOptions opts,
                 size_t consumers);
  ~SharedHessians();
  // The Hessian of block `block`'s group `input` for consumer `consumer` (0-based). Each consumer asks in block
  // order. Runs the pass up to the block when it has not got there, waits while that would put the pass more than
  // one block ahead of the slowest consumer still running, and rethrows the pass's error to every consumer.
  // Throws std::logic_error for a block already dropped (asked out of order) or a consumer that has left.
  std::shared_ptr<const GroupHessian> get(size_t consumer, uint32_t block, BlockInput input);
  // The consumer is done (or failed): it is no longer waited for, and what only it needed is dropped.
  void leave(size_t consumer);
  uint32_t block_count() const;
  uint64_t tokens() const;
  // How many blocks the pass has run (each at most once), and the most blocks whose Hessians were held at once.
  uint32_t blocks_run() const;
  uint32_t most_blocks_held() const;

 private:
  struct Observer;
  uint32_t slowest() const;  // the lowest block a consumer still running is at (UINT32_MAX when none is)
  void drop_passed();

  BlockByBlock pass_;
  std::unique_ptr<Observer> observer_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<uint32_t> at_;  // each consumer's block, UINT32_MAX once it has left
  std::vector<bool> left_;
  std::map<std::pair<uint32_t, BlockInput>, std::shared_ptr<const GroupHessian>> ready_;
  bool running_ = false;
  uint32_t run_ = 0;  // blocks the pass has run
  std::exception_ptr failed_;
  uint32_t most_held_ = 0;
};

}  // namespace qz
