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

// The same two, blocked by 256 columns and spread over `threads` (our threads; each BLAS call single-threaded on a
// fixed block), so that the results are the same bits for any thread count: a right-looking Cholesky (LAPACK on
// the diagonal blocks, trsm on the block row, gemm on the trailing triangle by column blocks), and the inverse of an
// upper triangle out of place, x = v^-1, one trsm per column block of x (x's lower part is set to zero). Return
// LAPACK-style info: 0, or the order of the first non-positive minor / zero diagonal (1-based).
int parallel_dpotrf_upper(int n, double* a, int lda, unsigned threads);
int parallel_strtri_upper(int n, const float* v, int ldv, float* x, int ldx, unsigned threads);

}  // namespace qz
