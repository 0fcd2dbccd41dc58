/* norm.c — LayerNorm (rows) and LayerNorm2d (over channels per pixel), CPU reference.
 * kn_layernorm_fwd has an AVX-512 path for C % 16 == 0 (same double accumulation). */
#include "kn.h"

#include <math.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
/* Row statistics with the same double accumulation as the scalar loop, 8 lanes at a time
 * (C a multiple of 16); only the summation order differs. */
static void row_stats16(const float *xr, int C, float *m_out, double *ss_out)
{
    __m512d s = _mm512_setzero_pd();
    for (int c = 0; c < C; c += 16) {
        __m512 v = _mm512_loadu_ps(xr + c);
        s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        s = _mm512_add_pd(s, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
    float m = (float)(_mm512_reduce_add_pd(s) / C);
    __m512 vm = _mm512_set1_ps(m);
    __m512d ss = _mm512_setzero_pd();
    for (int c = 0; c < C; c += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(xr + c), vm);
        __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
        __m512d d1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
        ss = _mm512_add_pd(ss, _mm512_mul_pd(d0, d0));
        ss = _mm512_add_pd(ss, _mm512_mul_pd(d1, d1));
    }
    *m_out = m;
    *ss_out = _mm512_reduce_add_pd(ss);
}
#endif

void kn_layernorm_fwd(float *y, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, int N, int C, float eps)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
#if defined(__AVX512F__)
        if (C % 16 == 0 && w && b) {
            float m;
            double ss;
            row_stats16(xr, C, &m, &ss);
            float r = 1.0f / sqrtf((float)(ss / C) + eps);
            __m512 vm = _mm512_set1_ps(m), vr = _mm512_set1_ps(r);
            for (int c = 0; c < C; c += 16) {
                __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr + c), vm), vr);
                t = _mm512_add_ps(_mm512_mul_ps(t, _mm512_loadu_ps(w + c)), _mm512_loadu_ps(b + c));
                _mm512_storeu_ps(yr + c, t);
            }
            if (mean) mean[n] = m;
            if (rstd) rstd[n] = r;
            continue;
        }
#endif
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
