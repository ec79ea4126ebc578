#include "qz/methods/hessian.hpp"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "qz/core/blas.hpp"
#include "qz/core/huge_pages.hpp"
#include "qz/core/parallel.hpp"

namespace qz {

namespace {
constexpr size_t kChunkTokens = 4096;  // float products over at most this many tokens, then added in double
constexpr size_t kPanel = 256;        // output columns per task
}  // namespace

HessianAccumulator::HessianAccumulator(size_t columns)
    : columns_(columns), sum_(Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(columns), static_cast<Eigen::Index>(columns))) {}

void HessianAccumulator::add_rows(const float* x, size_t tokens, unsigned threads) {
  use_single_threaded_blas();
  const size_t n = columns_;
  const size_t panels = (n + kPanel - 1) / kPanel;
  // One product buffer per worker, reused (a fresh large allocation per panel costs page faults).
  std::vector<std::vector<float>> blocks(std::max(1u, threads));
  for (size_t t0 = 0; t0 < tokens; t0 += kChunkTokens) {
    const size_t nt = std::min(kChunkTokens, tokens - t0);
    const float* X = x + t0 * n;  // row-major [nt, n]: column-major X^T with leading dimension n
    parallel_for(panels, threads, [&](size_t p, unsigned worker) {
      // The lower part of panel p: rows c0..n of columns c0..c0+w of X^T X, one single-threaded sgemm
      // (the upper triangle is the mirror, filled in by hessian()).
      const size_t c0 = p * kPanel, w = std::min(kPanel, n - c0), m = n - c0;
      std::vector<float>& block = blocks[worker];
      if (block.size() < n * kPanel) block.resize(n * kPanel);
      cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(w),
                  static_cast<int>(nt), 1.0f, X + c0, static_cast<int>(n), X + c0, static_cast<int>(n), 0.0f,
                  block.data(), static_cast<int>(m));
      for (size_t j = 0; j < w; ++j) {
        double* col = sum_.data() + (c0 + j) * n + c0;
        const float* b = block.data() + j * m;
        for (size_t i = j; i < m; ++i) col[i] += static_cast<double>(b[i]);
      }
    });
  }
  tokens_ += tokens;
}

void HessianAccumulator::add_hessian(const Eigen::MatrixXd& h, uint64_t tokens) {
  sum_ += h * (static_cast<double>(tokens) / 2.0);
  tokens_ += tokens;
}

Eigen::MatrixXd HessianAccumulator::hessian() const {
  Eigen::MatrixXd h(sum_.rows(), sum_.cols());
  advise_huge_pages(h.data(), static_cast<size_t>(h.size()) * sizeof(double));
  const double scale = tokens_ == 0 ? 1.0 : 2.0 / static_cast<double>(tokens_);
  const auto n = sum_.rows();
  // Rows' own products were added to the lower triangle (and precomputed Hessians to both): the lower one is
  // complete, the upper one its mirror.
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = j; i < n; ++i) h(i, j) = h(j, i) = sum_(i, j) * scale;
  return h;
}

Eigen::MatrixXd HessianAccumulator::take_hessian() {
  const double scale = tokens_ == 0 ? 1.0 : 2.0 / static_cast<double>(tokens_);
  const auto n = sum_.rows();
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = j; i < n; ++i) sum_(i, j) = sum_(j, i) = sum_(i, j) * scale;
  tokens_ = 0;
  return std::move(sum_);
}

}  // namespace qz
