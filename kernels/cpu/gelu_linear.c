/* gelu_linear.c — kn_gelu_linear_fwd: for each of G groups,
 * y[g, O, N] = W[O, K] · gelu(x[g, K, N] + b[K]), channel-major, for small K and O (the SAM
 * decoder's hypernetwork product: G = 4 sub-pixel positions, K = 32 channels, N = 8192
 * pixels, O = 4 masks). GELU as kn_gelu_fast_fwd. Vectorised along N: per block of columns,
 * each input row is activated once into a small buffer and accumulated into the O output
 * rows, so the activations are never written back. Blocks of all groups are items on the
 * kn_parallel_for pool.
 * Summation over k in order 0..K-1 (deterministic). Requires 1 ≤ O ≤ 16. No aliasing. */
#include "kn.h"

#include "fast_exp.h"

#define NB 512    /* columns per block */
#define OMAX 16

typedef struct {
    float *y;
    const float *x, *b, *W;
    int K, N, O, nb;
} gl_job_t;

static void gl_item(void *ctx, int gb, int tid)
{
    (void)tid;
    const gl_job_t *j = ctx;
    int K = j->K, N = j->N, O = j->O;
    float acc[OMAX][NB], g[NB];
    int grp = gb / j->nb, blk = gb % j->nb;
    int c0 = blk * NB, n = N - c0 < NB ? N - c0 : NB;
    const float *xg = j->x + (size_t)grp * K * N;
    float *yg = j->y + (size_t)grp * O * N;
    for (int o = 0; o < O; o++)
        for (int c = 0; c < n; c++) acc[o][c] = 0.0f;
    for (int k = 0; k < K; k++) {
        const float *xk = xg + (size_t)k * N + c0;
        float bk = j->b ? j->b[k] : 0.0f;
#pragma omp simd
        for (int c = 0; c < n; c++) g[c] = kn_gelu1_fast(xk[c] + bk);
        for (int o = 0; o < O; o++) {
            float w = j->W[(size_t)o * K + k];
#pragma omp simd
            for (int c = 0; c < n; c++) acc[o][c] += w * g[c];
        }
    }
    for (int o = 0; o < O; o++) {
        float *yo = yg + (size_t)o * N + c0;
        for (int c = 0; c < n; c++) yo[c] = acc[o][c];
    }
}

void kn_gelu_linear_fwd(float *y, const float *x, const float *b, const float *W, int G, int K,
                        int N, int O)
{
    if (G <= 0 || N <= 0) return;
    gl_job_t j = {y, x, b, W, K, N, O, (N + NB - 1) / NB};
    int items = G * j.nb;
    if (items == 1) gl_item(&j, 0, 0);
    else kn_parallel_for(items, KN_POOL_ANY, gl_item, &j);
}
