/* ln_row.h — one LayerNorm row, shared by the fused fast LayerNorm ops (layernorm_add_fast.c,
 * layernorm_gelu_fast.c forward and backward) so they all compute the statistics the same
 * way: float accumulation in two passes (mean, then centred variance), vectorised over the
 * C channels. Private to kernels/cpu. */
#ifndef MODA_KN_LN_ROW_H
#define MODA_KN_LN_ROW_H

#include <math.h>

/* Mean of x[C] into *mean; returns rstd = 1 / sqrt(var + eps). */
static inline float ln_row_stats(const float *x, int C, float eps, float *mean)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += x[c];
    float m = s / (float)C, ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += (x[c] - m) * (x[c] - m);
    *mean = m;
    return 1.0f / sqrtf(ss / (float)C + eps);
}

/* y[C] = LN(x[C]) · w + b (in place allowed). */
static inline void ln_row_fwd(float *y, const float *x, const float *w, const float *b, int C,
                              float eps)
{
    float m, r = ln_row_stats(x, C, eps, &m);
#pragma omp simd
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
}

#endif
