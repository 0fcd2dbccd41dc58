/* loss.c — training losses and point sampling for MoDA training (CPU reference):
 * bilinear point sampling (detectron2 point_sample, grid_sample align_corners=False,
 * zero padding) and its scatter backward, sigmoid BCE + Dice on sampled points, softmax
 * cross-entropy (selector), the splitmix64 RNG and uncertainty-based point selection.
 * Everything here is deterministic given the RNG state: sums are serial (double) and the
 * point scatter is per channel.
 */
#include "kn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- point sampling ---- */

typedef struct {
    int x0, y0;
    float w[4]; /* (y0,x0) (y0,x0+1) (y0+1,x0) (y0+1,x0+1); 0 for corners outside */
} bilin_t;

static bilin_t bilin(float px, float py, int H, int W)
{
    bilin_t b;
    float fx = px * (float)W - 0.5f, fy = py * (float)H - 0.5f;
    float flx = floorf(fx), fly = floorf(fy);
    float ax = fx - flx, ay = fy - fly;
    b.x0 = (int)flx;
    b.y0 = (int)fly;
    int vx0 = b.x0 >= 0 && b.x0 < W, vx1 = b.x0 + 1 >= 0 && b.x0 + 1 < W;
    int vy0 = b.y0 >= 0 && b.y0 < H, vy1 = b.y0 + 1 >= 0 && b.y0 + 1 < H;
    b.w[0] = vy0 && vx0 ? (1 - ay) * (1 - ax) : 0.0f;
    b.w[1] = vy0 && vx1 ? (1 - ay) * ax : 0.0f;
    b.w[2] = vy1 && vx0 ? ay * (1 - ax) : 0.0f;
    b.w[3] = vy1 && vx1 ? ay * ax : 0.0f;
    return b;
}

/* index of corner j (clamped into the map; its weight is 0 when it was outside) */
static size_t corner(const bilin_t *b, int j, int H, int W)
{
    int x = b->x0 + (j & 1), y = b->y0 + (j >> 1);
    x = x < 0 ? 0 : x >= W ? W - 1 : x;
    y = y < 0 ? 0 : y >= H ? H - 1 : y;
    return (size_t)y * W + x;
}

void kn_point_sample_fwd(float *out, const float *x, const float *pts, int C, int H, int W, int P)
{
#pragma omp parallel for schedule(static)
    for (int p = 0; p < P; p++) {
        bilin_t b = bilin(pts[2 * p], pts[2 * p + 1], H, W);
        size_t idx[4];
        for (int j = 0; j < 4; j++)
            idx[j] = corner(&b, j, H, W);
        for (int c = 0; c < C; c++) {
            const float *xc = x + (size_t)c * H * W;
            out[(size_t)c * P + p] = b.w[0] * xc[idx[0]] + b.w[1] * xc[idx[1]] +
                                     b.w[2] * xc[idx[2]] + b.w[3] * xc[idx[3]];
        }
    }
}

void kn_point_sample_bwd(float *dx, const float *dout, const float *pts, int C, int H, int W, int P)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float *xc = dx + (size_t)c * H * W;
        const float *gc = dout + (size_t)c * P;
        for (int p = 0; p < P; p++) {
            bilin_t b = bilin(pts[2 * p], pts[2 * p + 1], H, W);
            for (int j = 0; j < 4; j++)
                if (b.w[j] != 0.0f) xc[corner(&b, j, H, W)] += b.w[j] * gc[p];
        }
    }
}

/* ---- BCE + Dice ---- */

float kn_bce_dice_loss(float *dlogits, float parts[2], const float *logits, const float *targets,
                       int P, float weight)
{
    double bce = 0, st = 0, ss = 0, tt = 0;
    for (int i = 0; i < P; i++) {
        double x = logits[i], t = targets[i];
        double e = exp(-fabs(x));
        double s = x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        bce += (x > 0 ? x : 0) - x * t + log1p(e);
        st += s * t;
        ss += s;
        tt += t;
    }
    bce /= P;
    double num = 2 * st + 1, den = ss + tt + 1;
    double dice = 1 - num / den;
    if (dlogits) {
        for (int i = 0; i < P; i++) {
            double x = logits[i], t = targets[i];
            double e = exp(-fabs(x));
            double s = x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
            double d_bce = (s - t) / P;
            double d_s = -2 * t / den + num / (den * den); /* d dice / d s_i */
            dlogits[i] = (float)(weight * (d_bce + d_s * s * (1 - s)));
        }
    }
    if (parts) {
        parts[0] = (float)bce;
        parts[1] = (float)dice;
    }
    return (float)(weight * (bce + dice));
}

/* ---- softmax cross-entropy ---- */

float kn_cross_entropy_loss(float *dlogits, const float *logits, int K, int label, float weight)
{
    double m = logits[0];
    for (int i = 1; i < K; i++)
        m = logits[i] > m ? logits[i] : m;
    double s = 0;
    for (int i = 0; i < K; i++)
        s += exp(logits[i] - m);
    double lse = m + log(s);
    if (dlogits)
        for (int i = 0; i < K; i++)
            dlogits[i] = (float)(weight * (exp(logits[i] - lse) - (i == label ? 1.0 : 0.0)));
    return (float)(weight * (lse - logits[label]));
}

/* ---- RNG ---- */

uint64_t kn_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float kn_rng_uniform(uint64_t *state)
{
    return (float)(kn_rng_next(state) >> 40) * (1.0f / 16777216.0f);
}

/* ---- uncertainty point selection ---- */

size_t kn_uncertain_points_scratch(int P, int oversample)
{
    return (size_t)4 * P * oversample;
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int kn_uncertain_points(float *pts, const float *logits, int H, int W, int P, int oversample,
                        float importance, uint64_t *rng, float *scratch)
{
    if (P < 1 || oversample < 1 || !(importance >= 0.0f && importance <= 1.0f) || H < 1 || W < 1)
        return -1;
    int M = P * oversample;
    int n_imp = (int)(importance * (float)P);
    float *cand = scratch, *unc = scratch + 2 * (size_t)M, *sorted = unc + M;
    for (int i = 0; i < 2 * M; i++)
        cand[i] = kn_rng_uniform(rng);
    kn_point_sample_fwd(unc, logits, cand, 1, H, W, M);
    for (int i = 0; i < M; i++) {
        unc[i] = -fabsf(unc[i]);
        if (isnan(unc[i])) unc[i] = -INFINITY; /* a NaN logit is never "uncertain" */
    }
    int n = 0;
    if (n_imp > 0) {
        memcpy(sorted, unc, sizeof(float) * (size_t)M);
        qsort(sorted, (size_t)M, sizeof(float), cmp_desc);
        float thr = sorted[n_imp - 1];
        int above = 0;
        for (int i = 0; i < M; i++)
            above += unc[i] > thr;
        int ties = n_imp - above;
        for (int i = 0; i < M && n < n_imp; i++) {
            int take = unc[i] > thr || (unc[i] == thr && ties > 0);
            if (!take) continue;
            if (!(unc[i] > thr)) ties--;
            pts[2 * n] = cand[2 * i];
            pts[2 * n + 1] = cand[2 * i + 1];
            n++;
        }
    }
    for (; n < P; n++) {
        pts[2 * n] = kn_rng_uniform(rng);
        pts[2 * n + 1] = kn_rng_uniform(rng);
    }
    return 0;
}
