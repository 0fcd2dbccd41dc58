/* gemm.c — GEMM and linear layers through OpenBLAS (CPU reference); small-row products
 * under a per-thread override of 1 thread on the calling thread (kn.h runtime). */
#include "kn.h"

#include <cblas.h>

/* Rows per call below which a thread override of 1 (kn_set_thread_local_threads) runs the
 * product here on the calling thread: OpenBLAS's thread count is process-wide, and a thread
 * team for a few token rows costs more than the product (the selector's token passes). */
#define SMALL_M 64
#define SMALL_K 8192 /* op(A) rows are staged on the stack when A is transposed */

/* C = alpha op(A) op(B) + beta C on one thread. Transposed B (the nn.Linear layout): dot
 * products over contiguous rows with 16 independent partial sums (vectorised, fixed order).
 * Plain B: for each k the row op(B)[k,:] updates every row of C (all M rows stay in cache). */
#define LANES 16
static void gemm_rows(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int m = 0; m < M; m++) {
        float *c = C + (size_t)m * ldc;
        if (beta == 0.0f)
            for (int n = 0; n < N; n++) c[n] = 0.0f;
        else if (beta != 1.0f)
            for (int n = 0; n < N; n++) c[n] *= beta;
    }
    if (tb) {
        float arow[SMALL_K];
        for (int m = 0; m < M; m++) {
            const float *a = A + (size_t)m * lda;
            if (ta) {
                for (int k = 0; k < K; k++) arow[k] = A[(size_t)k * lda + m];
                a = arow;
            }
            float *c = C + (size_t)m * ldc;
            for (int n = 0; n < N; n++) {
                const float *b = B + (size_t)n * ldb;
                float acc[LANES] = {0};
                int k = 0;
                for (; k + LANES <= K; k += LANES)
                    for (int l = 0; l < LANES; l++) acc[l] += a[k + l] * b[k + l];
                float sum = 0.0f;
                for (; k < K; k++) sum += a[k] * b[k];
                for (int l = 0; l < LANES; l++) sum += acc[l];
                c[n] += alpha * sum;
            }
        }
        return;
    }
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        for (int m = 0; m < M; m++) {
            float a = alpha * (ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
            float *c = C + (size_t)m * ldc;
            for (int n = 0; n < N; n++) c[n] += a * b[n];
        }
    }
}

void kn_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
    if (kn_get_thread_local_threads() == 1 && M <= SMALL_M && K <= SMALL_K && M > 0 && N > 0) {
        gemm_rows(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kn_linear_fwd(float *y, const float *x, const float *W, const float *b, int N, int K,
                   int O)
{
    if (b) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) y[(size_t)n * O + o] = b[o];
    }
    kn_gemm(0, 1, N, O, K, 1.0f, x, K, W, K, b ? 1.0f : 0.0f, y, O);
}

void kn_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x,
                   const float *W, int N, int K, int O)
{
    if (dx) kn_gemm(0, 0, N, K, O, 1.0f, dy, O, W, K, 0.0f, dx, K);     /* dx = dy·W */
    if (dW) kn_gemm(1, 0, O, K, N, 1.0f, dy, O, x, K, 1.0f, dW, K);     /* dW += dyᵀ·x */
    if (db) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) db[o] += dy[(size_t)n * O + o];
    }
}
