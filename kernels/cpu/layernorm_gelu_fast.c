/* layernorm_gelu_fast.c — kn_layernorm_gelu_fast_fwd: row LayerNorm followed by GELU in one
 * pass over the data (the SAM decoder's upscaling runs it on 16384 rows of 64 channels,
 * where separate LayerNorm and GELU passes cost more). Float accumulation in two passes
 * (mean, then centred variance), vectorised over channels; GELU as kn_gelu_fast_fwd, run
 * flat over each block of rows while it is in L1 (GELU inside the per-row loop vectorised
 * badly: 1.25 ms vs 0.7 ms for 16384×64). Blocks run on the kn_parallel_for pool. In place
 * allowed. */
#include "kn.h"

#include <math.h>

#include "fast_exp.h"

#define RB 64 /* rows per item: LayerNorm row by row, then GELU over the block flat */

typedef struct {
    float *y;
    const float *x, *w, *b;
    int N, C;
    float eps;
} lg_job_t;

static void lg_item(void *ctx, int blk, int tid)
{
    (void)tid;
    const lg_job_t *j = ctx;
    int C = j->C, n0 = blk * RB, n1 = n0 + RB < j->N ? n0 + RB : j->N;
    const float *w = j->w, *b = j->b;
    for (int n = n0; n < n1; n++) {
        const float *xr = j->x + (size_t)n * C;
        float *yr = j->y + (size_t)n * C;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += xr[c];
        float m = s / (float)C, ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += (xr[c] - m) * (xr[c] - m);
        float r = 1.0f / sqrtf(ss / (float)C + j->eps);
#pragma omp simd
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - m) * r * w[c] + b[c];
    }
    float *yb = j->y + (size_t)n0 * C;
    size_t len = (size_t)(n1 - n0) * C;
#pragma omp simd
    for (size_t i = 0; i < len; i++) yb[i] = kn_gelu1_fast(yb[i]);
}

void kn_layernorm_gelu_fast_fwd(float *y, const float *x, const float *w, const float *b, int N,
                                int C, float eps)
{
    if (N <= 0) return;
    lg_job_t j = {y, x, w, b, N, C, eps};
    int nb = (N + RB - 1) / RB;
    if (nb == 1) lg_item(&j, 0, 0);
    else kn_parallel_for(nb, KN_POOL_ANY, lg_item, &j);
}
