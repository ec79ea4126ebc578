// The GPTQ Hessian of a linear layer, H = (2/N) sum over tokens of x x^T, accumulated from streamed activation
// chunks (never all activations in memory): each chunk's x^T x is formed in float by fixed column panels spread over
// threads (the lower triangle only, one single-threaded OpenBLAS sgemm per panel), and added into a double
// accumulator, so the result does not depend on the thread count.
#pragma once

#include <Eigen/Dense>
#include <cstddef>
#include <cstdint>

namespace qz {

class HessianAccumulator {
 public:
  explicit HessianAccumulator(size_t columns);
  // Adds `tokens` rows of `columns` floats (row-major). Values must be finite (the caller checks).
  void add_rows(const float* x, size_t tokens, unsigned threads);
  // Merges a precomputed Hessian (already 2/N sum x x^T) of `tokens` tokens.
  void add_hessian(const Eigen::MatrixXd& h, uint64_t tokens);
  uint64_t tokens() const { return tokens_; }
  size_t columns() const { return columns_; }
  // 2/N sum x x^T (zero if no token was added).
  Eigen::MatrixXd hessian() const;
  // The same, made in place from the accumulator (no second n x n matrix, `threads` sharing the work), which is
  // left empty.
  Eigen::MatrixXd take_hessian(unsigned threads = 1);

 private:
  size_t columns_;
  uint64_t tokens_ = 0;
  bool filled_ = false;  // sum_ holds data (allocated, not zeroed, at the first add: the first add writes)
  Eigen::MatrixXd sum_;  // sum of x x^T (the lower triangle; all of it after a precomputed Hessian)
};

}  // namespace qz
