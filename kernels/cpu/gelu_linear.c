/* gelu_linear.c — kn_gelu_linear_fwd: for each of G groups,
 * y[g, O, N] = W[O, K] · gelu(x[g, K, N] + b[K]), channel-major, for small K and O (the SAM
 * decoder's hypernetwork product: G = 4 sub-pixel positions, K = 32 channels, N = 8192
 * pixels, O = 4 masks). GELU as kn_gelu_fast_fwd. Vectorised along N: per block of columns,
 * each input row is activated once into a small buffer and accumulated into the O output
 * rows, so the activations are never written back. One parallel region for all groups.
 * Summation over k in order 0..K-1 (deterministic). Requires 1 ≤ O ≤ 16. No aliasing. */
#include "kn.h"

#include "fast_exp.h"

#define NB 512    /* columns per block */
#define OMAX 16

void kn_gelu_linear_fwd(float *y, const float *x, const float *b, const float *W, int G, int K,
                        int N, int O)
{
    int nb = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) if ((size_t)G * K * N > 16384)
    for (int gb = 0; gb < G * nb; gb++) {
        float acc[OMAX][NB], g[NB];
        int grp = gb / nb, blk = gb % nb;
        int c0 = blk * NB, n = N - c0 < NB ? N - c0 : NB;
        const float *xg = x + (size_t)grp * K * N;
        float *yg = y + (size_t)grp * O * N;
        for (int o = 0; o < O; o++)
            for (int c = 0; c < n; c++) acc[o][c] = 0.0f;
        for (int k = 0; k < K; k++) {
            const float *xk = xg + (size_t)k * N + c0;
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
            float *yo = yg + (size_t)o * N + c0;
            for (int c = 0; c < n; c++) yo[c] = acc[o][c];
        }
    }
}
