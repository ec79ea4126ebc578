// Work sharing over std::thread: tasks handed out dynamically, results made deterministic by the callers, which
// write each task's output to its own slot.
#pragma once

#include <cstddef>
#include <functional>

namespace qz {

// Number of hardware threads (at least 1).
unsigned hardware_threads();

// Runs fn(task, worker) for every task in [0, n) on min(threads, n) workers, the calling thread being worker 0.
// If any call throws, remaining tasks are skipped and the first exception is rethrown once all workers stopped.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t task, unsigned worker)>& fn);

}  // namespace qz
