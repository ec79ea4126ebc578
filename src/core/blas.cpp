#include "qz/core/blas.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <mutex>

#include "qz/core/parallel.hpp"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void strtri_(const char* uplo, const char* diag, const int* n, float* a, const int* lda, int* info);
}

namespace qz {

void use_single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

int lapack_dpotrf_upper(int n, double* a, int lda) {
  use_single_threaded_blas();
  int info = 0;
  const char uplo = 'U';
  dpotrf_(&uplo, &n, a, &lda, &info);
  return info;
}

int lapack_strtri_upper(int n, float* a, int lda) {
  use_single_threaded_blas();
  int info = 0;
  const char uplo = 'U', diag = 'N';
  strtri_(&uplo, &diag, &n, a, &lda, &info);
  return info;
}

namespace {
constexpr int kBlock = 256;  // columns per block and per task (fixed: the results do not depend on the threads)
}  // namespace

int parallel_dpotrf_upper(int n, double* a, int lda, unsigned threads) {
  use_single_threaded_blas();
  const auto at = [&](int i, int j) { return a + i + static_cast<size_t>(j) * static_cast<size_t>(lda); };
  for (int k = 0; k < n; k += kBlock) {
    const int kb = std::min(kBlock, n - k);
    if (const int info = lapack_dpotrf_upper(kb, at(k, k), lda); info != 0) return info + k;
    const int rest = n - k - kb;
    if (rest == 0) break;
    const size_t tasks = static_cast<size_t>((rest + kBlock - 1) / kBlock);
    // The block row: A[k:k+kb, j] := V_kk^-T A[k:k+kb, j], column block by column block.
    parallel_for(tasks, threads, [&](size_t c, unsigned) {
      const int j0 = k + kb + static_cast<int>(c) * kBlock, w = std::min(kBlock, n - j0);
      cblas_dtrsm(CblasColMajor, CblasLeft, CblasUpper, CblasTrans, CblasNonUnit, kb, w, 1.0, at(k, k), lda,
                  at(k, j0), lda);
    });
    // The trailing upper triangle: A[k+kb:j0+w, j0:j0+w] -= P[:, k+kb:j0+w]^T P[:, j0:j0+w], P the block row (the
    // part below the diagonal of a diagonal block is computed too, and never read).
    parallel_for(tasks, threads, [&](size_t c, unsigned) {
      const int j0 = k + kb + static_cast<int>(c) * kBlock, w = std::min(kBlock, n - j0);
      cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, j0 + w - (k + kb), w, kb, -1.0, at(k, k + kb), lda,
                  at(k, j0), lda, 1.0, at(k + kb, j0), lda);
    });
  }
  return 0;
}

int parallel_strtri_upper(int n, const float* v, int ldv, float* x, int ldx, unsigned threads) {
  use_single_threaded_blas();
  for (int i = 0; i < n; ++i)
    if (!(v[i + static_cast<size_t>(i) * static_cast<size_t>(ldv)] != 0.0f)) return i + 1;
  const size_t tasks = static_cast<size_t>((n + kBlock - 1) / kBlock);
  // Column block J of X solves V[0:j1, 0:j1] X[0:j1, J] = I[0:j1, J] (X is upper triangular too: zero below j1).
  // The largest blocks first, for balance (the order does not change any result).
  parallel_for(tasks, threads, [&](size_t t, unsigned) {
    const int j0 = static_cast<int>(tasks - 1 - t) * kBlock, w = std::min(kBlock, n - j0), j1 = j0 + w;
    for (int j = j0; j < j1; ++j) {
      float* col = x + static_cast<size_t>(j) * static_cast<size_t>(ldx);
      std::fill(col, col + n, 0.0f);
      col[j] = 1.0f;
    }
    cblas_strsm(CblasColMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, j1, w, 1.0f, v, ldv,
                x + static_cast<size_t>(j0) * static_cast<size_t>(ldx), ldx);
  });
  return 0;
}

}  // namespace qz
