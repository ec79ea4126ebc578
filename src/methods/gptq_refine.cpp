#include "qz/methods/gptq_refine.hpp"

#include "qz/core/cpu_features.hpp"

#include <cblas.h>

#include <Eigen/Dense>
#include <cmath>
#include <limits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// Whether moving a value from q to v (a neighbour; NaN: not stored) lowers the row's objective: with t = q - v the
// change of its error and g = (E H)_c, the objective changes by 2 t g + t^2 H_cc (a NaN diagonal: never).
inline bool lowers(float q, float v, float g, double hcc) {
  const double t = static_cast<double>(q) - v;
  return 2.0 * t * g + t * t * hcc < -1e-7 * t * t * hcc;
}

// The first column in [c, c1) of one row where a step up or down lowers the objective, or c1.
size_t first_step(const float* q, const float* up, const float* down, const float* g, const double* hd, size_t c,
                  size_t c1) {
  for (; c < c1; ++c)
    if (lowers(q[c], up[c], g[c], hd[c]) || lowers(q[c], down[c], g[c], hd[c])) return c;
  return c1;
}

// The same in four double lanes: the same operations in the same order (no FMA), so the same answers.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) inline __m256d lowers4(__m256d q, const float* v, __m256d g, __m256d h) {
  const __m256d t = _mm256_sub_pd(q, _mm256_cvtps_pd(_mm_loadu_ps(v)));
  const __m256d delta = _mm256_add_pd(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), t), g),
                                      _mm256_mul_pd(_mm256_mul_pd(t, t), h));
  const __m256d bound = _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(-1e-7), t), t), h);
  return _mm256_cmp_pd(delta, bound, _CMP_LT_OQ);
}

__attribute__((target("avx2"))) size_t first_step_avx2(const float* q, const float* up, const float* down,
                                                       const float* g, const double* hd, size_t c, size_t c1) {
  for (; c + 4 <= c1; c += 4) {
    const __m256d qv = _mm256_cvtps_pd(_mm_loadu_ps(q + c)), gv = _mm256_cvtps_pd(_mm_loadu_ps(g + c));
    const __m256d h = _mm256_loadu_pd(hd + c);
    const __m256d any = _mm256_or_pd(lowers4(qv, up + c, gv, h), lowers4(qv, down + c, gv, h));
    if (const int m = _mm256_movemask_pd(any)) return c + static_cast<size_t>(__builtin_ctz(static_cast<unsigned>(m)));
  }
  return first_step(q, up, down, g, hd, c, c1);
}
#else
size_t first_step_avx2(const float* q, const float* up, const float* down, const float* g, const double* hd, size_t c,
                       size_t c1) {
  return first_step(q, up, down, g, hd, c, c1);
}
#endif

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
  // H's diagonal, NaN for the columns no step may move (dead, or no input energy): their tests then fail.
  std::vector<double> hd(cols);
  for (size_t c = 0; c < cols; ++c)
    hd[c] = !dead[c] && H[c * cols + c] > 0.0f ? static_cast<double>(H[c * cols + c]) : std::numeric_limits<double>::quiet_NaN();
  const bool wide = cpu_has_avx2();
  std::vector<char> active(rows, 1);
  std::vector<size_t> moved(rows, 0);
  for (int sweep = 0; sweep < kCodeSweeps; ++sweep) {
    std::fill(moved.begin(), moved.end(), 0);
    for (size_t c0 = 0; c0 < cols; c0 += kSweepColumns) {
      const size_t c1 = std::min(cols, c0 + kSweepColumns);
      for (size_t r = 0; r < rows; ++r) {
        if (!active[r]) continue;
        float* g = G + r * cols;
        const size_t base = r * cols;
        for (size_t c = c0;; ++c) {
          c = wide ? first_step_avx2(Q + base, up + base, down + base, g, hd.data(), c, c1)
                   : first_step(Q + base, up + base, down + base, g, hd.data(), c, c1);
          if (c >= c1) break;
          const size_t i = base + c;
          for (const int step : {1, -1}) {
            const float v = step > 0 ? up[i] : down[i];
            if (!lowers(Q[i], v, g[c], hd[c])) continue;
            const auto tf = static_cast<float>(static_cast<double>(Q[i]) - v);  // the change of e_c
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
                        const float* eh_shifted, double shift, RefineScratch* scratch) {
  const size_t gs = group_width(f, cols), groups = cols / gs;
  if (rounds <= 0 || rows == 0 || groups == 0 || groups * gs != cols) return 0.0;
  const auto n = static_cast<Eigen::Index>(cols), er = static_cast<Eigen::Index>(rows);
  RefineScratch own;
  RefineScratch& sc = scratch ? *scratch : own;
  for (auto* v : {&sc.q, &sc.e, &sc.g, &sc.up, &sc.down}) v->resize(rows * cols);
  Eigen::Map<MatF> Q(sc.q.data(), er, n), E(sc.e.data(), er, n), G(sc.g.data(), er, n);
  std::vector<float>& up = sc.up;
  std::vector<float>& down = sc.down;
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
