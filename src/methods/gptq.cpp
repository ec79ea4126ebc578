#include "qz/methods/gptq.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "qz/core/blas.hpp"
#include "qz/core/huge_pages.hpp"
#include "qz/core/parallel.hpp"
#include "qz/methods/gptq_refine.hpp"

namespace qz {

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr size_t kRowsPerTask = 128;
// Pieces of the factorization's copies and conversions, spread over threads; fixed, so results do not depend on the
// thread count.
constexpr size_t kCopyPieces = 16;
size_t tasks_count(size_t rows) { return (rows + kRowsPerTask - 1) / kRowsPerTask; }

// What the factorization gives: U, and its double work buffer (n x n), kept for later float matrices so that they
// need no fresh pages: as floats, its first n x n are free and its second n x n hold L when asked for.
struct Factor {
  MatF U;
  std::shared_ptr<double[]> buffer;
  const float* L = nullptr;  // row-major lower, with keep_l
  double shift = 0.0;        // the lambda added to the diagonal
  float* free_floats() const { return reinterpret_cast<float*>(buffer.get()); }
};

// U, the upper Cholesky factor of (H + lambda I)^-1, raising lambda until the factorization succeeds.
// With R the reversal permutation and R (H + lambda I) R = L L^T, the inverse is (R L^-T R)(R L^-1 R), a lower
// times an upper triangle, so U = R L^-1 R: one Cholesky and one triangular inverse (core/blas.hpp: blocked, over
// our threads, the same bits for any thread count). No transposes: R A R of a symmetric A is A's buffer reversed;
// LAPACK's upper factor V (A = V^T V, column-major) read row-major is L, and its inverse read row-major is L^-1;
// U in row-major order is that buffer reversed again. The factor's double buffer holds the float inverse meanwhile.
Factor inverse_cholesky_upper(const Eigen::MatrixXd& H, const std::vector<bool>& dead, double damp, unsigned threads,
                              GptqStats& stats, bool keep_l) {
  const auto n = H.rows();
  const int ni = static_cast<int>(n);
  const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);
  // A dead column's diagonal counts as 1 (its row and column are zero), as the reference sets it.
  double diag_sum = 0.0;
  for (Eigen::Index i = 0; i < n; ++i) diag_sum += dead[static_cast<size_t>(i)] ? 1.0 : H(i, i);
  const double mean_diag = diag_sum / static_cast<double>(n);
  Factor out;
  out.buffer = std::shared_ptr<double[]>(new double[nn]);
  double* a = out.buffer.get();
  advise_huge_pages(a, nn * sizeof(double));
  float* x = reinterpret_cast<float*>(a);  // L^-1, once the factor is read
  out.U.resize(n, n);  // first L, then U
  advise_huge_pages(out.U.data(), nn * sizeof(float));
  float* l = out.U.data();
  double frac = damp;
  for (int attempt = 1; attempt <= 200; ++attempt) {
    stats.damp_attempts = attempt;
    // R H R, damped (rows of the buffer in parallel pieces; plain copies, the same for any thread count).
    parallel_for(kCopyPieces, threads, [&](size_t p, unsigned) {
      const size_t b = nn * p / kCopyPieces, e = nn * (p + 1) / kCopyPieces;
      std::reverse_copy(H.data() + (nn - e), H.data() + (nn - b), a + b);
    });
    for (Eigen::Index i = 0; i < n; ++i) {
      double& d = a[static_cast<size_t>(i * n + i)];
      if (dead[static_cast<size_t>(n - 1 - i)]) d = 1.0;
      d += frac * mean_diag;
    }
    if (parallel_dpotrf_upper(ni, a, ni, threads) == 0) {
      // L (row-major lower) in float, the rest zero; check it is usable.
      std::vector<char> usable(kCopyPieces, 1);
      parallel_for(kCopyPieces, threads, [&](size_t p, unsigned) {
        const auto pieces = static_cast<Eigen::Index>(kCopyPieces);
        for (Eigen::Index i = n * static_cast<Eigen::Index>(p) / pieces; i < n * static_cast<Eigen::Index>(p + 1) / pieces;
             ++i) {
          const size_t row = static_cast<size_t>(i * n);
          for (Eigen::Index j = 0; j <= i; ++j) l[row + static_cast<size_t>(j)] = static_cast<float>(a[row + static_cast<size_t>(j)]);
          std::fill(l + row + static_cast<size_t>(i) + 1, l + row + static_cast<size_t>(n), 0.0f);
          const double d = a[row + static_cast<size_t>(i)];
          if (!(d > 0.0 && std::isfinite(d))) usable[p] = 0;
        }
      });
      const bool ok = std::all_of(usable.begin(), usable.end(), [](char u) { return u != 0; });
      if (ok && parallel_strtri_upper(ni, l, ni, x, ni, threads) == 0) {
        // Each piece of L to the buffer's second half when kept, then U over it.
        float* kept = x + nn;
        std::vector<char> finite(kCopyPieces, 1);
        parallel_for(kCopyPieces, threads, [&](size_t p, unsigned) {
          const size_t b = nn * p / kCopyPieces, e = nn * (p + 1) / kCopyPieces;
          if (keep_l) std::copy(l + b, l + e, kept + b);
          std::reverse_copy(x + (nn - e), x + (nn - b), l + b);
          finite[p] = Eigen::Map<const Eigen::ArrayXf>(l + b, static_cast<Eigen::Index>(e - b)).allFinite() ? 1 : 0;
        });
        if (std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; })) {
          stats.damp = frac;
          out.shift = frac * mean_diag;
          if (keep_l) out.L = kept;
          return out;
        }
      }
    }
    frac = frac < 1.0 ? std::min(1.0, frac + 0.01) : frac * 2.0;  // +0.01 steps up to 1, then doubling
  }
  throw std::runtime_error("GPTQ: the Hessian is not positive definite even with damping");
}

}  // namespace

GptqStats gptq_quantize(const Format& f, const float* w, size_t rows, size_t cols, const Eigen::MatrixXd& H_in,
                        const GptqConfig& cfg, unsigned threads, uint8_t* dst, std::shared_ptr<const float>* h_float) {
  if (static_cast<size_t>(H_in.rows()) != cols || static_cast<size_t>(H_in.cols()) != cols)
    throw std::invalid_argument(fmt::format("GPTQ: Hessian is {}x{} for {} columns", H_in.rows(), H_in.cols(), cols));
  if (!H_in.allFinite()) throw std::invalid_argument("GPTQ: Hessian has NaN or Inf entries");
  GptqStats stats;
  const auto n = static_cast<Eigen::Index>(cols);

  // Dead columns (their diagonal counts as 1) and the column order; H_in itself is read, not copied, unless
  // act-order permutes it.
  std::vector<bool> dead(cols, false);
  std::vector<double> diag(cols);
  for (size_t i = 0; i < cols; ++i) {
    diag[i] = H_in(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(i));
    if (diag[i] == 0.0) {
      dead[i] = true;
      diag[i] = 1.0;
      ++stats.dead_columns;
    }
  }
  std::vector<size_t> perm(cols);
  std::iota(perm.begin(), perm.end(), 0);
  if (cfg.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) { return diag[a] > diag[b]; });
  const auto t0 = std::chrono::steady_clock::now();
  Eigen::MatrixXd Hp;
  std::vector<bool> dead_p = dead;
  if (cfg.act_order) {
    Hp.resize(n, n);
    advise_huge_pages(Hp.data(), static_cast<size_t>(Hp.size()) * sizeof(double));
    for (Eigen::Index b = 0; b < n; ++b)
      for (Eigen::Index a = 0; a < n; ++a) Hp(a, b) = H_in(static_cast<Eigen::Index>(perm[a]), static_cast<Eigen::Index>(perm[b]));
    for (size_t c = 0; c < cols; ++c) dead_p[c] = dead[perm[c]];
  }
  // The refinement's E H comes from the pass's own errors through L (below), a triangular product.
  const bool refine = cfg.refine_rounds > 0;
  Factor factor = inverse_cholesky_upper(cfg.act_order ? Hp : H_in, dead_p, cfg.damp, threads, stats, refine);
  const MatF& U = factor.U;
  const float* L = factor.L;
  const double shift = factor.shift;
  const auto t1 = std::chrono::steady_clock::now();
  stats.factor_seconds = std::chrono::duration<double>(t1 - t0).count();

  const size_t gs = f.scope() == GridScope::Tensor ? cols : f.block_size();
  const size_t groups = cols / gs;
  const bool static_groups = cfg.static_groups || cfg.act_order || f.scope() == GridScope::Tensor;
  size_t B = std::max<size_t>(1, cfg.block_size);
  if (!static_groups) B = (B + gs - 1) / gs * gs;  // every group inside one lazy block
  const size_t row_bytes = f.row_bytes(cols);

  // The original weights with dead columns zeroed.
  auto load_row = [&](size_t r, float* out) {
    for (size_t c = 0; c < cols; ++c) out[c] = dead[c] ? 0.0f : w[r * cols + c];
  };
  // Importance of each (original) column for the weighted grid fit: diag(H), the imatrix of these inputs.
  std::vector<float> importance;
  if (cfg.weighted_fit) {
    importance.resize(cols);
    for (size_t c = 0; c < cols; ++c)
      importance[c] = dead[c] ? 0.0f : static_cast<float>(H_in(static_cast<Eigen::Index>(c), static_cast<Eigen::Index>(c)));
  }
  const float* imp = importance.empty() ? nullptr : importance.data();
  BlockGrid tensor_grid;
  if (f.scope() == GridScope::Tensor) {
    std::vector<float> all(rows * cols);
    for (size_t r = 0; r < rows; ++r) load_row(r, all.data() + r * cols);
    f.fit(all.data(), all.size(), nullptr, tensor_grid);
  }

  // The refinement's float copy of the undamped Hessian (symmetric: its column-major buffer is also row-major), in
  // parallel pieces, in the factorization's spare buffer; left for the caller if it asks.
  float* Hf = nullptr;
  if (refine || h_float) {
    Hf = factor.free_floats();
    const size_t nn = cols * cols;
    parallel_for(kCopyPieces, threads, [&](size_t p, unsigned) {
      for (size_t k = nn * p / kCopyPieces; k < nn * (p + 1) / kCopyPieces; ++k) Hf[k] = static_cast<float>(H_in.data()[k]);
    });
    if (h_float) *h_float = std::shared_ptr<const float>(factor.buffer, Hf);
  } else {
    factor.buffer.reset();
  }

  use_single_threaded_blas();
  const size_t tasks = tasks_count(rows);
  std::vector<double> task_refine_gain(tasks, 0.0), task_refine_seconds(tasks, 0.0);
  std::vector<double> task_loss(tasks, 0.0);
  // Each worker's buffers, reused from one chunk of rows to the next (fresh pages and their zeroing cost more than
  // the work on them here). Every element is written before it is read.
  struct Scratch {
    MatF W, errors;
    std::vector<float> orig, w0, eh;
    std::vector<BlockGrid> grids;
    std::vector<int32_t> codes;
    RefineScratch refine;
  };
  std::vector<Scratch> scratch(std::max(1u, threads));
  parallel_for(tasks, threads, [&](size_t task, unsigned worker) {
    const size_t r0 = task * kRowsPerTask, nr = std::min(kRowsPerTask, rows - r0);
    const auto enr = static_cast<Eigen::Index>(nr);
    Scratch& sc = scratch[worker];
    MatF& W = sc.W;  // permuted columns
    W.resize(enr, n);
    std::vector<float>& orig = sc.orig;
    orig.resize(cols);
    std::vector<BlockGrid>& grids = sc.grids;
    grids.resize(nr * groups);
    for (size_t r = 0; r < nr; ++r) {
      load_row(r0 + r, orig.data());
      for (size_t c = 0; c < cols; ++c) W(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = orig[perm[c]];
      if (f.scope() == GridScope::Tensor) {
        grids[r] = tensor_grid;
      } else if (static_groups) {
        for (size_t g = 0; g < groups; ++g) f.fit(orig.data() + g * gs, gs, imp ? imp + g * gs : nullptr, grids[r * groups + g]);
      }
    }
    std::vector<int32_t>& codes = sc.codes;
    codes.resize(nr * cols);
    MatF& errors = sc.errors;  // every column's Err, for the refinement
    if (refine) errors.resize(enr, n);
    double loss = 0.0;
    std::vector<float> fit_buf(gs);
    for (size_t i1 = 0; i1 < cols; i1 += B) {
      const size_t count = std::min(B, cols - i1);
      const auto ec = static_cast<Eigen::Index>(count);
      MatF W1 = W.middleCols(static_cast<Eigen::Index>(i1), ec);
      MatF Err(enr, ec);
      for (size_t i = 0; i < count; ++i) {
        const size_t col = i1 + i, oc = perm[col], g = oc / gs, pos = oc % gs;
        const auto ei = static_cast<Eigen::Index>(i);
        if (!static_groups && pos == 0) {
          for (size_t r = 0; r < nr; ++r) {
            for (size_t j = 0; j < gs; ++j) fit_buf[j] = W1(static_cast<Eigen::Index>(r), ei + static_cast<Eigen::Index>(j));
            f.fit(fit_buf.data(), gs, imp ? imp + g * gs : nullptr, grids[r * groups + g]);
          }
        }
        const float d = U(static_cast<Eigen::Index>(col), static_cast<Eigen::Index>(col));
        for (size_t r = 0; r < nr; ++r) {
          const auto er = static_cast<Eigen::Index>(r);
          const BlockGrid& grid = grids[r * groups + g];
          const float wv = W1(er, ei);
          const int32_t code = f.quantize_value(grid, pos, wv);
          const float qv = f.dequantize_value(grid, pos, code);
          codes[r * cols + oc] = code;
          const float e = (wv - qv) / d;
          loss += static_cast<double>(wv - qv) * (wv - qv) / (static_cast<double>(d) * d) / 2.0;
          Err(er, ei) = e;
        }
        const auto rest = ec - ei - 1;
        if (rest > 0)
          W1.rightCols(rest).noalias() -=
              Err.col(ei) * U.row(static_cast<Eigen::Index>(col)).segment(static_cast<Eigen::Index>(col) + 1, rest);
      }
      if (refine) errors.middleCols(static_cast<Eigen::Index>(i1), ec) = Err;
      const auto after = n - static_cast<Eigen::Index>(i1 + count);
      if (after > 0)  // W[:, i1 + count:] -= Err * U[i1 : i1 + count, i1 + count:], one single-threaded sgemm
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), static_cast<int>(after),
                    static_cast<int>(count), -1.0f, Err.data(), static_cast<int>(count),
                    U.data() + i1 * cols + i1 + count, static_cast<int>(cols), 1.0f, W.data() + i1 + count,
                    static_cast<int>(cols));
    }
    if (refine) {
      const auto r0t = std::chrono::steady_clock::now();
      std::vector<float>& w0 = sc.w0;
      w0.resize(nr * cols);
      for (size_t r = 0; r < nr; ++r) load_row(r0 + r, w0.data() + r * cols);
      // E (H + lambda I) with E = W0 - Q (permuted columns): the pass left W0 - Q = Err U, and with R the reversal,
      // U^-1 = R L R, so E (H + lambda I) = Err U U^-1 U^-T = Err R L^T R: one triangular product on the reversed
      // rows, half the work of E H.
      for (Eigen::Index r = 0; r < enr; ++r) std::reverse(&errors(r, 0), &errors(r, 0) + n);
      cblas_strmm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, static_cast<int>(nr),
                  static_cast<int>(cols), 1.0f, L, static_cast<int>(cols), errors.data(), static_cast<int>(cols));
      std::vector<float>& eh = sc.eh;
      eh.resize(nr * cols);
      for (size_t r = 0; r < nr; ++r)
        for (size_t c = 0; c < cols; ++c)
          eh[r * cols + perm[c]] = errors(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(cols - 1 - c));
      task_refine_gain[task] = gptq_refine_rows(f, w0.data(), nr, cols, Hf, dead, cfg.refine_rounds,
                                                grids.data(), codes.data(), eh.data(), shift, &sc.refine);
      task_refine_seconds[task] = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0t).count();
    }
    for (size_t r = 0; r < nr; ++r)
      for (size_t g = 0; g < groups; ++g)
        f.encode(grids[r * groups + g], codes.data() + r * cols + g * gs,
                 dst + (r0 + r) * row_bytes + g * f.block_bytes());
    task_loss[task] = loss;
  });
  for (double l : task_loss) stats.loss += l;
  for (double gain : task_refine_gain) stats.refine_gain += gain;
  for (double sec : task_refine_seconds) stats.refine_seconds += sec / std::max(1u, threads);
  stats.update_seconds =
      std::max(0.0, std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() - stats.refine_seconds);
  return stats;
}

}  // namespace qz
