/* norm.c — LayerNorm (rows) and LayerNorm2d (over channels per pixel), CPU reference. */
#include "kn.h"

#include <math.h>
#include <stdlib.h>

void kn_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, int N, int C, float eps)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) s += xr[c];
        float m = (float)(s / C);
        for (int c = 0; c < C; c++) {
            float d = xr[c] - m;
            ss += (double)d * d;
        }
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - m) * r * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

void kn_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                      const float *mean, const float *rstd, const float *w, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        double sum_g = 0, sum_gx = 0;
        for (int c = 0; c < C; c++) {
            float xh = (xr[c] - m) * r;
            float g = dyr[c] * (w ? w[c] : 1.0f);
            sum_g += g;
            sum_gx += (double)g * xh;
            if (dw) dw[c] += dyr[c] * xh;
            if (db) db[c] += dyr[c];
        }
        if (dx) {
            float *dxr = dx + (size_t)n * C;
            float mg = (float)(sum_g / C), mgx = (float)(sum_gx / C);
            for (int c = 0; c < C; c++) {
                float xh = (xr[c] - m) * r;
                float g = dyr[c] * (w ? w[c] : 1.0f);
                dxr[c] = r * (g - mg - xh * mgx);
            }
        }
    }
}

void kn_layernorm2d_fwd(float *y, const float *x, const float *w, const float *b, int C,
                        int HW, float eps)
{
#pragma omp parallel for schedule(static)
    for (int p0 = 0; p0 < HW; p0 += 64) {
        int pn = HW - p0 < 64 ? HW - p0 : 64;
        float s[64] = {0}, ss[64] = {0};
        for (int c = 0; c < C; c++)
            for (int p = 0; p < pn; p++) s[p] += x[(size_t)c * HW + p0 + p];
        for (int p = 0; p < pn; p++) s[p] /= (float)C;
        for (int c = 0; c < C; c++)
            for (int p = 0; p < pn; p++) {
                float d = x[(size_t)c * HW + p0 + p] - s[p];
                ss[p] += d * d;
            }
        for (int p = 0; p < pn; p++) ss[p] = 1.0f / sqrtf(ss[p] / (float)C + eps);
        for (int c = 0; c < C; c++)
            for (int p = 0; p < pn; p++) {
                size_t i = (size_t)c * HW + p0 + p;
                y[i] = (x[i] - s[p]) * ss[p] * w[c] + b[c];
            }
    }
}
