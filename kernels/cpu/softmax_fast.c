/* softmax_fast.c — softmax ops with a vectorised exp (fast_exp.h), for the SAM decoder's
 * attention over 4096 image tokens (glibc expf made softmax ~20% of a decoder call).
 *
 *   kn_softmax_fast_fwd:      softmax along each row of x[rows, cols] (like kn_softmax_fwd)
 *   kn_softmax_dim0_fast_fwd: softmax along each column of x[rows, cols] (over the rows),
 *                             vectorised across columns; suits few rows × many columns.
 * Both subtract the maximum first, so exp only sees u ≤ 0. Relative error per element
 * ≤ 1e-6 + 1e-10·(reduction length) beyond the float rounding of x − max. Deterministic
 * (fixed summation order, independent of the thread count). In place allowed. Work is
 * split into items of ≥ ~16K elements on the kn_parallel_for pool (no OpenMP barrier
 * waiting for a descheduled thread on a busy machine); small inputs run on the caller. */
#include "kn.h"

#include "fast_exp.h"

#define ITEM 16384 /* elements per work item (at least one row / column block) */

static void row_softmax(float *yr, const float *xr, int cols)
{
    float m = xr[0];
#pragma omp simd reduction(max : m)
    for (int c = 0; c < cols; c++) m = xr[c] > m ? xr[c] : m;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < cols; c++) {
        float e = kn_exp_nonpos(xr[c] - m);
        yr[c] = e;
        s += e;
    }
    float inv = 1.0f / s;
#pragma omp simd
    for (int c = 0; c < cols; c++) yr[c] *= inv;
}

typedef struct {
    float *y;
    const float *x;
    int rows, cols, per; /* per: rows (row op) or column blocks (dim0 op) per item */
} sm_job_t;

static void rows_item(void *ctx, int it, int tid)
{
    (void)tid;
    const sm_job_t *j = ctx;
    int r0 = it * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int r = r0; r < r1; r++)
        row_softmax(j->y + (size_t)r * j->cols, j->x + (size_t)r * j->cols, j->cols);
}

void kn_softmax_fast_fwd(float *y, const float *x, int rows, int cols)
{
    if (rows <= 0 || cols <= 0) return;
    sm_job_t j = {y, x, rows, cols, ITEM / cols > 0 ? ITEM / cols : 1};
    int items = (rows + j.per - 1) / j.per;
    if (items == 1) rows_item(&j, 0, 0);
    else kn_parallel_for(items, KN_POOL_ANY, rows_item, &j);
}

#define CB 256 /* columns per block */

static void dim0_block(float *y, const float *x, int rows, int cols, int c0)
{
    int n = cols - c0 < CB ? cols - c0 : CB;
    float m[CB], s[CB];
    for (int c = 0; c < n; c++) m[c] = x[c0 + c];
    for (int r = 1; r < rows; r++) {
        const float *xr = x + (size_t)r * cols + c0;
#pragma omp simd
        for (int c = 0; c < n; c++) m[c] = xr[c] > m[c] ? xr[c] : m[c];
    }
    for (int c = 0; c < n; c++) s[c] = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols + c0;
        float *yr = y + (size_t)r * cols + c0;
#pragma omp simd
        for (int c = 0; c < n; c++) {
            float e = kn_exp_nonpos(xr[c] - m[c]);
            yr[c] = e;
            s[c] += e;
        }
    }
    for (int c = 0; c < n; c++) s[c] = 1.0f / s[c];
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols + c0;
#pragma omp simd
        for (int c = 0; c < n; c++) yr[c] *= s[c];
    }
}

static void dim0_item(void *ctx, int it, int tid)
{
    (void)tid;
    const sm_job_t *j = ctx;
    int nb = (j->cols + CB - 1) / CB;
    int b0 = it * j->per, b1 = b0 + j->per < nb ? b0 + j->per : nb;
    for (int b = b0; b < b1; b++) dim0_block(j->y, j->x, j->rows, j->cols, b * CB);
}

void kn_softmax_dim0_fast_fwd(float *y, const float *x, int rows, int cols)
{
    if (rows <= 0 || cols <= 0) return;
    int nb = (cols + CB - 1) / CB;
    int per = ITEM / ((size_t)rows * CB) > 0 ? (int)(ITEM / ((size_t)rows * CB)) : 1;
    sm_job_t j = {y, x, rows, cols, per};
    int items = (nb + per - 1) / per;
    if (items == 1) dim0_item(&j, 0, 0);
    else kn_parallel_for(items, KN_POOL_ANY, dim0_item, &j);
}
