/* act.c — element-wise activations and softmax, CPU reference. */
#include "kn.h"

#include <math.h>

void kn_gelu_fwd(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void kn_gelu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

void kn_relu_fwd(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kn_relu_bwd(float *dx, const float *dy, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

typedef struct {
    float *y;
    const float *a, *b;
    size_t n;
} add_job_t;

#define ADD_BLK 65536

static void add_item(void *ctx, int blk, int tid)
{
    (void)tid;
    const add_job_t *j = ctx;
    size_t i0 = (size_t)blk * ADD_BLK, i1 = i0 + ADD_BLK < j->n ? i0 + ADD_BLK : j->n;
    for (size_t i = i0; i < i1; i++) j->y[i] = j->a[i] + j->b[i];
}

/* on the kn_parallel_for pool, not an OpenMP region (see transpose.c) */
void kn_add(float *y, const float *a, const float *b, size_t n)
{
    add_job_t j = {y, a, b, n};
    if (n <= ADD_BLK) add_item(&j, 0, 0);
    else kn_parallel_for((int)((n + ADD_BLK - 1) / ADD_BLK), KN_POOL_ANY, add_item, &j);
}

void kn_softmax_fwd(float *y, const float *x, int rows, int cols)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float m = xr[0];
        for (int c = 1; c < cols; c++) m = xr[c] > m ? xr[c] : m;
        float s = 0;
        for (int c = 0; c < cols; c++) {
            yr[c] = expf(xr[c] - m);
            s += yr[c];
        }
        float inv = 1.0f / s;
        for (int c = 0; c < cols; c++) yr[c] *= inv;
    }
}

void kn_softmax_bwd(float *dx, const float *dy, const float *y, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        const float *dyr = dy + (size_t)r * cols, *yr = y + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        float dot = 0;
        for (int c = 0; c < cols; c++) dot += dyr[c] * yr[c];
        for (int c = 0; c < cols; c++) dxr[c] = yr[c] * (dyr[c] - dot);
    }
}
