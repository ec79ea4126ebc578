#include "qz/core/blas.hpp"

#include <cblas.h>

#include <mutex>

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

}  // namespace qz
