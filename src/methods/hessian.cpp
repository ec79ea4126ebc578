#include "qz/methods/hessian.hpp"

#include <algorithm>

#include "qz/core/parallel.hpp"

namespace qz {

namespace {
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr size_t kChunkTokens = 256;  // float products over at most this many tokens, then added in double
constexpr size_t kPanel = 64;         // output columns per task
}  // namespace

HessianAccumulator::HessianAccumulator(size_t columns)
    : columns_(columns), sum_(Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(columns), static_cast<Eigen::Index>(columns))) {}

void HessianAccumulator::add_rows(const float* x, size_t tokens, unsigned threads) {
  const auto n = static_cast<Eigen::Index>(columns_);
  const size_t panels = (columns_ + kPanel - 1) / kPanel;
  for (size_t t0 = 0; t0 < tokens; t0 += kChunkTokens) {
    const auto nt = static_cast<Eigen::Index>(std::min(kChunkTokens, tokens - t0));
    const Eigen::Map<const MatF> X(x + t0 * columns_, nt, n);
    parallel_for(panels, threads, [&](size_t p, unsigned) {
      const auto c0 = static_cast<Eigen::Index>(p * kPanel);
      const auto w = std::min<Eigen::Index>(static_cast<Eigen::Index>(kPanel), n - c0);
      const Eigen::MatrixXf block = X.transpose() * X.middleCols(c0, w);
      sum_.middleCols(c0, w) += block.cast<double>();
    });
  }
  tokens_ += tokens;
}

void HessianAccumulator::add_hessian(const Eigen::MatrixXd& h, uint64_t tokens) {
  sum_ += h * (static_cast<double>(tokens) / 2.0);
  tokens_ += tokens;
}

Eigen::MatrixXd HessianAccumulator::hessian() const {
  if (tokens_ == 0) return sum_;
  return sum_ * (2.0 / static_cast<double>(tokens_));
}

}  // namespace qz
