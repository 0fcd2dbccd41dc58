/* softmax_fast.c — softmax ops with a vectorised exp (fast_exp.h), for the SAM decoder's
 * attention over 4096 image tokens (glibc expf made softmax ~20% of a decoder call).
 *
 *   kn_softmax_fast_fwd:      softmax along each row of x[rows, cols] (like kn_softmax_fwd)
 *   kn_softmax_dim0_fast_fwd: softmax along each column of x[rows, cols] (over the rows),
 *                             vectorised across columns; suits few rows × many columns.
 * Both subtract the maximum first, so exp only sees u ≤ 0. Relative error per element
 * ≤ ~1e-6. Deterministic (fixed summation order for a given build). In place allowed. */
#include "kn.h"

#include "fast_exp.h"

void kn_softmax_fast_fwd(float *y, const float *x, int rows, int cols)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 16384)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
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
}

#define CB 256 /* columns per block */

void kn_softmax_dim0_fast_fwd(float *y, const float *x, int rows, int cols)
{
    int nb = (cols + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > 16384)
    for (int b = 0; b < nb; b++) {
        int c0 = b * CB, n = cols - c0 < CB ? cols - c0 : CB;
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
}
