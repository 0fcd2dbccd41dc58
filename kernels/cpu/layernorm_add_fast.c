/* layernorm_add_fast.c — kn_layernorm_add_fast_fwd: row LayerNorm with an optional second
 * output y2 = y + a (the SAM decoder's image side: keys = LN(keys) and keys + pe in one pass
 * over 4096×256). Float accumulation in two passes (mean, then centred variance),
 * vectorised over channels; rows in items of 64 on the kn_parallel_for pool. In place
 * allowed for y == x. */
#include "kn.h"

#include <math.h>

#include "ln_row.h"

#define RB 64

typedef struct {
    float *y, *y2;
    const float *a, *x, *w, *b;
    int N, C;
    float eps;
} la_job_t;

static void la_item(void *ctx, int blk, int tid)
{
    (void)tid;
    const la_job_t *j = ctx;
    int C = j->C, n0 = blk * RB, n1 = n0 + RB < j->N ? n0 + RB : j->N;
    const float *w = j->w, *b = j->b;
    for (int n = n0; n < n1; n++) {
        const float *xr = j->x + (size_t)n * C;
        float *yr = j->y + (size_t)n * C;
        ln_row_fwd(yr, xr, w, b, C, j->eps);
        if (j->y2) {
            const float *ar = j->a + (size_t)n * C;
            float *y2r = j->y2 + (size_t)n * C;
#pragma omp simd
            for (int c = 0; c < C; c++) y2r[c] = yr[c] + ar[c];
        }
    }
}

void kn_layernorm_add_fast_fwd(float *y, float *y2, const float *a, const float *x,
                               const float *w, const float *b, int N, int C, float eps)
{
    if (N <= 0) return;
    la_job_t j = {y, y2, a, x, w, b, N, C, eps};
    int nb = (N + RB - 1) / RB;
    if (nb == 1) la_item(&j, 0, 0);
    else kn_parallel_for(nb, KN_POOL_ANY, la_item, &j);
}
