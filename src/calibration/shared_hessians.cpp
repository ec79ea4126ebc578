#include "qz/calibration/shared_hessians.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "qz/methods/hessian.hpp"

namespace qz {

namespace {

BlockByBlockOptions with_float_inputs(BlockByBlockOptions o) {
  o.float_inputs = true;
  return o;
}

}  // namespace

// Accumulates each group's Hessian as the pass shows its input, as BlockQuantizer does for one output.
struct SharedHessians::Observer final : BlockObserver {
  explicit Observer(unsigned thread_count) : threads(thread_count) {}
  void observe(const LinearGroup& g, const float* x, size_t tokens, size_t columns) override {
    auto it = open.find(g.input);
    if (it == open.end()) it = open.emplace(g.input, HessianAccumulator(columns)).first;
    it->second.add_rows(x, tokens, threads);
  }
  std::vector<std::pair<std::string, FloatTensor>> finish(const LinearGroup& g) override {
    auto it = open.find(g.input);
    auto h = std::make_shared<GroupHessian>();
    if (it != open.end()) {
      h->tokens = it->second.tokens();
      h->hessian = it->second.take_hessian();
      open.erase(it);
    }
    made.emplace_back(std::make_pair(g.block, g.input), std::move(h));
    return {};  // float inputs: the pass runs the float model whatever the outputs store
  }
  unsigned threads;
  std::map<BlockInput, HessianAccumulator> open;
  std::vector<std::pair<std::pair<uint32_t, BlockInput>, std::shared_ptr<const GroupHessian>>> made;
};

SharedHessians::SharedHessians(const ModelWeights& model, const std::vector<std::vector<int32_t>>& windows,
                               BlockByBlockOptions opts, size_t consumers)
    : pass_(model, windows, with_float_inputs(opts)),
      observer_(std::make_unique<Observer>(opts.threads)),
      at_(consumers, 0),
      left_(consumers, false) {}

SharedHessians::~SharedHessians() = default;

uint32_t SharedHessians::block_count() const { return pass_.block_count(); }
uint64_t SharedHessians::tokens() const { return pass_.tokens(); }

uint32_t SharedHessians::blocks_run() const {
  std::lock_guard lk(mutex_);
  return run_;
}

uint32_t SharedHessians::most_blocks_held() const {
  std::lock_guard lk(mutex_);
  return most_held_;
}

uint32_t SharedHessians::slowest() const {
  uint32_t m = UINT32_MAX;
  for (size_t c = 0; c < at_.size(); ++c)
    if (!left_[c]) m = std::min(m, at_[c]);
  return m;
}

void SharedHessians::drop_passed() {
  const uint32_t s = slowest();
  for (auto it = ready_.begin(); it != ready_.end();) it = it->first.first < s ? ready_.erase(it) : std::next(it);
}

std::shared_ptr<const GroupHessian> SharedHessians::get(size_t consumer, uint32_t block, BlockInput input) {
  std::unique_lock lk(mutex_);
  if (consumer >= at_.size() || left_[consumer]) throw std::logic_error("SharedHessians: an unknown or departed consumer");
  if (block < at_[consumer]) throw std::logic_error("SharedHessians: blocks asked out of order");
  if (block != at_[consumer]) {
    at_[consumer] = block;
    drop_passed();
    changed_.notify_all();  // a consumer waiting for the slowest may go on
  }
  for (;;) {
    if (const auto it = ready_.find({block, input}); it != ready_.end()) return it->second;
    if (failed_) std::rethrow_exception(failed_);
    const uint32_t next = run_;  // the pass's own counter is written by the thread running it
    if (block < next || next >= pass_.block_count())
      throw std::logic_error("SharedHessians: a group that the pass did not keep");
    if (!running_ && next <= slowest() + 1) {
      running_ = true;
      lk.unlock();
      try {
        pass_.run_next_block(*observer_);  // only this thread touches the pass and the observer while running_
      } catch (...) {
        lk.lock();
        running_ = false;
        failed_ = std::current_exception();
        changed_.notify_all();
        throw;
      }
      lk.lock();
      running_ = false;
      ++run_;
      for (auto& [key, h] : observer_->made) ready_[key] = std::move(h);
      observer_->made.clear();
      std::set<uint32_t> held;
      for (const auto& [key, h] : ready_) held.insert(key.first);
      most_held_ = std::max<uint32_t>(most_held_, static_cast<uint32_t>(held.size()));
      changed_.notify_all();
      continue;
    }
    changed_.wait(lk);
  }
}

void SharedHessians::leave(size_t consumer) {
  std::lock_guard lk(mutex_);
  if (consumer >= left_.size() || left_[consumer]) return;
  left_[consumer] = true;
  drop_passed();
  changed_.notify_all();
}

}  // namespace qz
