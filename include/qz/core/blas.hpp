// The BLAS/LAPACK under the large products and factorizations: OpenBLAS, always single-threaded inside a call
// (the project shares work out over its own threads in fixed pieces, so that results are the same bits for any
// thread count and any machine's core count).
#pragma once

namespace qz {

// Sets OpenBLAS to one thread (once; cheap afterwards). Call before any BLAS or LAPACK call.
void use_single_threaded_blas();

// LAPACK through OpenBLAS (column-major, upper triangles). Return LAPACK's info (0 on success).
int lapack_dpotrf_upper(int n, double* a, int lda);  // a = V^T V in place (V in the upper triangle)
int lapack_strtri_upper(int n, float* a, int lda);   // a = a^-1 in place, a upper triangular, non-unit

}  // namespace qz
