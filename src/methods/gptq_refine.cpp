#include "qz/methods/gptq_refine.hpp"

#include "qz/core/cpu_features.hpp"

#include <cblas.h>

#include <Eigen/Dense>
#include <cmath>

namespace qz {

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// g += t h over n values (a code's move). Vectorised where the CPU has AVX2; a multiply and an add apart (no FMA), so
// the bits are the scalar loop's.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) void add_scaled_avx2(float* g, const float* h, float t, size_t n) {
  for (size_t j = 0; j < n; ++j) g[j] += t * h[j];
}
#endif
void add_scaled(float* g, const float* h, float t, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_avx2()) return add_scaled_avx2(g, h, t, n);
#endif
  for (size_t j = 0; j < n; ++j) g[j] += t * h[j];
}

constexpr size_t kSweepColumns = 32;

size_t group_width(const Format& f, size_t cols) { return f.scope() == GridScope::Tensor ? cols : f.block_size(); }

// Coordinate descent on the codes of rows [0, rows): E = W0 - Q and G = E H (row-major, rows x cols) updated in
// place. Rows are independent, so a sweep goes over blocks of kSweepColumns columns, each block for all rows in turn
// (the H rows of a block, which a move reads, stay in cache for all of them); within a row the columns go in order,
// as row-by-row sweeps take them. A row stops when a sweep moved none of its codes. up/down hold the values one
// grid step up and down of every code (NaN where the block does not store that code; Format::code_neighbours),
// found before (the format's calls cost more than the test itself) and again here only for a code that moves.
void refine_codes(const Format& f, size_t rows, size_t cols, const float* H, const std::vector<bool>& dead,
                  const BlockGrid* grids, int32_t* codes, float* Q, float* E, float* G, float* up, float* down) {
  const size_t gs = group_width(f, cols), groups = cols / gs;
  std::vector<char> live(cols);
  for (size_t c = 0; c < cols; ++c) live[c] = !dead[c] && H[c * cols + c] > 0.0f;
  std::vector<char> active(rows, 1);
  std::vector<size_t> moved(rows, 0);
  for (int sweep = 0; sweep < kCodeSweeps; ++sweep) {
    std::fill(moved.begin(), moved.end(), 0);
    for (size_t c0 = 0; c0 < cols; c0 += kSweepColumns) {
      const size_t c1 = std::min(cols, c0 + kSweepColumns);
      for (size_t r = 0; r < rows; ++r) {
        if (!active[r]) continue;
        float* g = G + r * cols;
        for (size_t c = c0; c < c1; ++c) {
          if (!live[c]) continue;
          const double hjj = H[c * cols + c];
          const size_t i = r * cols + c;
          for (const int step : {1, -1}) {
            const float v = step > 0 ? up[i] : down[i];
            if (std::isnan(v)) continue;  // not a code this block stores
            const double t = static_cast<double>(Q[i]) - v;  // the change of e_c
            const double delta = 2.0 * t * g[c] + t * t * hjj;
            if (delta < -1e-7 * t * t * hjj) {
              const auto tf = static_cast<float>(t);
              E[i] += tf;
              add_scaled(g, H + c * cols, tf, cols);  // H is symmetric: row c = column c
              Q[i] = v;
              codes[i] += step;
              f.code_neighbours(grids[r * groups + c / gs], c % gs, 1, &codes[i], &Q[i], &up[i], &down[i]);
              ++moved[r];
              break;
            }
          }
        }
      }
    }
    bool any = false;
    for (size_t r = 0; r < rows; ++r) {
      if (moved[r] == 0) active[r] = 0;
      any = any || active[r];
    }
    if (!any) break;
  }
}

// Joint least-squares refit of one row's block parameters for fixed codes; kept only if the objective drops.
// With B the n x P matrix of the blocks' bases (block b's columns only in its own parameters) and p the parameters,
// q = B p, and (w0 - B p)^T H (w0 - B p) = const - 2 p^T B^T H w0 + p^T (B^T H B) p; H w0 = g + H B p_old.
double refit_params(const Format& f, const float* w0, size_t cols, const float* H, BlockGrid* grids,
                    const int32_t* codes, float* wq, float* e, float* g) {
  const size_t gs = group_width(f, cols), groups = cols / gs, k = f.linear_params();
  const auto n = static_cast<Eigen::Index>(cols), P = static_cast<Eigen::Index>(groups * k);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> basis(n, static_cast<Eigen::Index>(k));
  Eigen::VectorXd p_old(P);
  for (size_t c = 0; c < cols; ++c) f.linear_basis(grids[c / gs], c % gs, codes[c], basis.row(static_cast<Eigen::Index>(c)).data());
  for (size_t b = 0; b < groups; ++b) f.linear_params_of(grids[b], p_old.data() + b * k);
  // HB (n x P): column (b, kk) = H[:, block b] basis_kk(block b).
  Eigen::Map<const MatF> Hm(H, n, n);
  Eigen::MatrixXd HB(n, P);
  for (size_t b = 0; b < groups; ++b)
    for (size_t kk = 0; kk < k; ++kk) {
      const Eigen::VectorXf bv = basis.block(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(kk),
                                             static_cast<Eigen::Index>(gs), 1).cast<float>();
      HB.col(static_cast<Eigen::Index>(b * k + kk)) =
          (Hm.middleRows(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(gs)).transpose() * bv).cast<double>();
    }
  Eigen::MatrixXd A(P, P);
  for (size_t b = 0; b < groups; ++b)
    for (size_t kk = 0; kk < k; ++kk)
      A.row(static_cast<Eigen::Index>(b * k + kk)) =
          basis.block(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(kk), static_cast<Eigen::Index>(gs), 1).transpose() *
          HB.middleRows(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(gs));
  const Eigen::VectorXd gd = Eigen::Map<const Eigen::VectorXf>(g, n).cast<double>();
  const Eigen::VectorXd hw = gd + HB * p_old;  // H w0
  Eigen::VectorXd rhs(P);
  for (size_t b = 0; b < groups; ++b)
    for (size_t kk = 0; kk < k; ++kk)
      rhs(static_cast<Eigen::Index>(b * k + kk)) =
          basis.block(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(kk), static_cast<Eigen::Index>(gs), 1)
              .col(0)
              .dot(hw.segment(static_cast<Eigen::Index>(b * gs), static_cast<Eigen::Index>(gs)));
  Eigen::MatrixXd Ar = A;
  const double ridge = 1e-9 * (A.diagonal().cwiseAbs().sum() / static_cast<double>(P) + 1e-30);
  Ar.diagonal().array() += ridge;
  Eigen::VectorXd p = Ar.ldlt().solve(rhs);
  if (!p.allFinite()) return 0.0;
  std::vector<BlockGrid> refit(grids, grids + groups);
  for (size_t b = 0; b < groups; ++b) f.set_linear_params(refit[b], p.data() + b * k);  // p: now as stored
  const double delta = -2.0 * (p - p_old).dot(rhs) + p.dot(A * p) - p_old.dot(A * p_old);
  if (!(delta < 0.0)) return 0.0;
  std::copy(refit.begin(), refit.end(), grids);
  const Eigen::VectorXd dg = HB * (p - p_old);
  for (size_t c = 0; c < cols; ++c) {
    wq[c] = f.dequantize_value(grids[c / gs], c % gs, codes[c]);
    e[c] = w0[c] - wq[c];
    g[c] -= static_cast<float>(dg(static_cast<Eigen::Index>(c)));
  }
  return -delta;
}

}  // namespace

double gptq_refine_rows(const Format& f, const float* w0, size_t rows, size_t cols, const float* H,
                        const std::vector<bool>& dead, int rounds, BlockGrid* grids, int32_t* codes,
                        const float* eh_shifted, double shift) {
  const size_t gs = group_width(f, cols), groups = cols / gs;
  if (rounds <= 0 || rows == 0 || groups == 0 || groups * gs != cols) return 0.0;
  const auto n = static_cast<Eigen::Index>(cols), er = static_cast<Eigen::Index>(rows);
  MatF Q(er, n), E(er, n), G(er, n);
  std::vector<float> up(rows * cols), down(rows * cols);
  // Q, and the values a step up and down, for a row's blocks.
  auto values_of_row = [&](size_t r) {
    for (size_t b = 0; b < groups; ++b)
      f.code_neighbours(grids[r * groups + b], 0, gs, codes + r * cols + b * gs, &Q(static_cast<Eigen::Index>(r), 0) + b * gs,
                        up.data() + r * cols + b * gs, down.data() + r * cols + b * gs);
  };
  for (size_t r = 0; r < rows; ++r) {
    values_of_row(r);
    for (size_t c = 0; c < cols; ++c)
      E(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) =
          w0[r * cols + c] - Q(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  }
  if (eh_shifted) {
    // G = E (H + shift I) - shift E on live columns; a dead column's H row and column are zero.
    const auto sf = static_cast<float>(shift);
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const auto ri = static_cast<Eigen::Index>(r), ci = static_cast<Eigen::Index>(c);
        G(ri, ci) = dead[c] ? 0.0f : eh_shifted[r * cols + c] - sf * E(ri, ci);
      }
  } else {
    // G = E H (H symmetric), one single-threaded sgemm over the rows.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
                static_cast<int>(cols), 1.0f, E.data(), static_cast<int>(cols), H, static_cast<int>(cols), 0.0f,
                G.data(), static_cast<int>(cols));
  }
  double before = 0.0, after = 0.0;
  for (Eigen::Index r = 0; r < er; ++r) before += static_cast<double>(E.row(r).cast<double>().dot(G.row(r).cast<double>()));
  for (int round = 0; round < rounds; ++round) {
    refine_codes(f, rows, cols, H, dead, grids, codes, Q.data(), E.data(), G.data(), up.data(), down.data());
    if (f.linear_params() > 0 && f.scope() == GridScope::Block && cols <= kRefitMaxCols)
      for (size_t r = 0; r < rows; ++r) {
        const auto ri = static_cast<Eigen::Index>(r);
        if (refit_params(f, w0 + r * cols, cols, H, grids + r * groups, codes + r * cols, &Q(ri, 0), &E(ri, 0),
                         &G(ri, 0)) > 0.0)
          values_of_row(r);  // new grids: new neighbour values
      }
  }
  for (Eigen::Index r = 0; r < er; ++r) after += static_cast<double>(E.row(r).cast<double>().dot(G.row(r).cast<double>()));
  return before - after;
}

}  // namespace qz
