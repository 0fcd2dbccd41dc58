/* gemm.c — GEMM and linear layers through OpenBLAS (CPU reference). */
#include "kn.h"

#include <cblas.h>

void kn_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
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
