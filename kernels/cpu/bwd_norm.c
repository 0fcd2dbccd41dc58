/* bwd_norm.c — gradient of kn_layernorm2d_fwd on one [C, HW] map (CPU reference).
 *
 * Statistics are recomputed per pixel in double (the forward keeps none). With
 * x̂ = (x − μ)·r and g = dy·w, over the C channels of one pixel:
 *   dx = r·(g − mean(g) − x̂·mean(g·x̂)),  dw += Σ_pixels dy·x̂,  db += Σ_pixels dy.
 * dx is parallel over pixel blocks; the per-pixel statistics go to scratch, then dw/db are
 * reduced per channel in a fixed order, so the result does not depend on the thread count.
 */
#include "kn.h"

#include <math.h>

#define BLK 64

/* mean and rstd of pixels p0 .. p0+pn-1, as the forward computes them */
static void stats(float *mu, float *rs, const float *x, int C, int HW, int p0, int pn, float eps)
{
    double s[BLK] = {0}, ss[BLK] = {0};
    for (int c = 0; c < C; c++)
        for (int p = 0; p < pn; p++)
            s[p] += x[(size_t)c * HW + p0 + p];
    for (int p = 0; p < pn; p++)
        mu[p] = (float)(s[p] / C);
    for (int c = 0; c < C; c++)
        for (int p = 0; p < pn; p++) {
            double dd = (double)x[(size_t)c * HW + p0 + p] - mu[p];
            ss[p] += dd * dd;
        }
    for (int p = 0; p < pn; p++)
        rs[p] = (float)(1.0 / sqrt(ss[p] / C + eps));
}

void kn_layernorm2d_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int C, int HW, float eps, float *scratch)
{
    int want_p = (dw || db) && scratch;
    float *mu_all = scratch, *rs_all = scratch ? scratch + HW : NULL;
#pragma omp parallel for schedule(static)
    for (int p0 = 0; p0 < HW; p0 += BLK) {
        int pn = HW - p0 < BLK ? HW - p0 : BLK;
        float mu[BLK], rs[BLK];
        stats(mu, rs, x, C, HW, p0, pn, eps);
        if (want_p)
            for (int p = 0; p < pn; p++) {
                mu_all[p0 + p] = mu[p];
                rs_all[p0 + p] = rs[p];
            }
        if (!dx) continue;
        double sg[BLK] = {0}, sgx[BLK] = {0};
        for (int c = 0; c < C; c++)
            for (int p = 0; p < pn; p++) {
                size_t i = (size_t)c * HW + p0 + p;
                double g = (double)dy[i] * (w ? w[c] : 1.0f);
                sg[p] += g;
                sgx[p] += g * ((x[i] - mu[p]) * rs[p]);
            }
        for (int p = 0; p < pn; p++) {
            sg[p] /= C;
            sgx[p] /= C;
        }
        for (int c = 0; c < C; c++)
            for (int p = 0; p < pn; p++) {
                size_t i = (size_t)c * HW + p0 + p;
                float xh = (x[i] - mu[p]) * rs[p];
                float g = dy[i] * (w ? w[c] : 1.0f);
                dx[i] = rs[p] * (g - (float)sg[p] - xh * (float)sgx[p]);
            }
    }
    if (!want_p) return;
        /* per-channel reductions: channel c sums its pixels in order (thread-count free) */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * HW, *dyc = dy + (size_t)c * HW;
        double sw = 0, sb = 0;
        for (int p = 0; p < HW; p++) {
            sw += (double)dyc[p] * ((xc[p] - mu_all[p]) * rs_all[p]);
            sb += dyc[p];
        }
        if (dw) dw[c] += (float)sw;
        if (db) db[c] += (float)sb;
    }
}
