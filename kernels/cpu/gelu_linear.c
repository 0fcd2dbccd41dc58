/* gelu_linear.c — kn_gelu_linear_fwd: y[O, N] = W[O, K] · gelu(x[K, N] + b[K]), channel-major,
 * for small K and O (the SAM decoder's hypernetwork product: K = 32 channels, N = 16384
 * pixels, O = 4 masks). GELU as kn_gelu_fast_fwd. Vectorised along N: per block of columns,
 * each input row is activated once into a small buffer and accumulated into the O output
 * rows, so the activations are never written back. Summation over k in order 0..K-1
 * (deterministic). Requires 1 ≤ O ≤ 16. No aliasing of y with x. */
#include "kn.h"

#include "fast_exp.h"

#define NB 512    /* columns per block */
#define OMAX 16

void kn_gelu_linear_fwd(float *y, const float *x, const float *b, const float *W, int K, int N,
                        int O)
{
    int nb = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nb; blk++) {
        float acc[OMAX][NB], g[NB];
        int c0 = blk * NB, n = N - c0 < NB ? N - c0 : NB;
        for (int o = 0; o < O; o++)
            for (int c = 0; c < n; c++) acc[o][c] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float *xk = x + (size_t)k * N + c0;
            float bk = b ? b[k] : 0.0f;
#pragma omp simd
            for (int c = 0; c < n; c++) g[c] = kn_gelu1_fast(xk[c] + bk);
            for (int o = 0; o < O; o++) {
                float w = W[(size_t)o * K + k];
#pragma omp simd
                for (int c = 0; c < n; c++) acc[o][c] += w * g[c];
            }
        }
        for (int o = 0; o < O; o++) {
            float *yo = y + (size_t)o * N + c0;
            for (int c = 0; c < n; c++) yo[c] = acc[o][c];
        }
    }
}
