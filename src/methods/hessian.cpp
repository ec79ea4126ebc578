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

HessianAccumulator::HessianAccumulator(size_t columns) : columns_(columns) {}

namespace {

// a (n x n, column-major) = its lower triangle times `scale`, mirrored into the upper one, by 64 x 64 tiles (the
// mirrored writes stay in cache), column blocks spread over threads. Each entry is written by one task only.
void scale_and_mirror_lower(double* a, size_t n, double scale, unsigned threads) {
  constexpr size_t kTile = 64;
  const size_t tiles = (n + kTile - 1) / kTile;
  parallel_for(tiles, threads, [&](size_t tj, unsigned) {
    const size_t j0 = tj * kTile, j1 = std::min(n, j0 + kTile);
    for (size_t ti = tj; ti < tiles; ++ti) {
      const size_t i0 = ti * kTile, i1 = std::min(n, i0 + kTile);
      for (size_t j = j0; j < j1; ++j)
        for (size_t i = std::max(i0, j); i < i1; ++i) {
          const double v = a[j * n + i] * scale;
          a[j * n + i] = v;
          a[i * n + j] = v;
        }
    }
  });
}

}  // namespace

void HessianAccumulator::add_rows(const float* x, size_t tokens, unsigned threads) {
  use_single_threaded_blas();
  const size_t n = columns_;
  if (tokens == 0) return;
  if (!filled_) {
    sum_.resize(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(n));
    advise_huge_pages(sum_.data(), n * n * sizeof(double));
  }
  const size_t panels = (n + kPanel - 1) / kPanel;
  // One product buffer per worker, reused (a fresh large allocation per panel costs page faults).
  std::vector<std::vector<float>> blocks(std::max(1u, threads));
  for (size_t t0 = 0; t0 < tokens; t0 += kChunkTokens) {
    const size_t nt = std::min(kChunkTokens, tokens - t0);
    const float* X = x + t0 * n;  // row-major [nt, n]: column-major X^T with leading dimension n
    const bool first = !filled_;  // the first chunk writes (sum_ is not zeroed), the others add
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
        if (first)
          for (size_t i = j; i < m; ++i) col[i] = static_cast<double>(b[i]);
        else
          for (size_t i = j; i < m; ++i) col[i] += static_cast<double>(b[i]);
      }
    });
    filled_ = true;
  }
  tokens_ += tokens;
}

void HessianAccumulator::add_hessian(const Eigen::MatrixXd& h, uint64_t tokens) {
  if (filled_)
    sum_ += h * (static_cast<double>(tokens) / 2.0);
  else
    sum_ = h * (static_cast<double>(tokens) / 2.0);
  filled_ = true;
  tokens_ += tokens;
}

Eigen::MatrixXd HessianAccumulator::hessian() const {
  const auto cols = static_cast<Eigen::Index>(columns_);
  if (!filled_) return Eigen::MatrixXd::Zero(cols, cols);
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

Eigen::MatrixXd HessianAccumulator::take_hessian(unsigned threads) {
  const auto cols = static_cast<Eigen::Index>(columns_);
  if (!filled_) return Eigen::MatrixXd::Zero(cols, cols);
  const double scale = tokens_ == 0 ? 1.0 : 2.0 / static_cast<double>(tokens_);
  scale_and_mirror_lower(sum_.data(), columns_, scale, threads);
  tokens_ = 0;
  filled_ = false;
  return std::move(sum_);
}

}  // namespace qz
