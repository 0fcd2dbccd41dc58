/* bwd_conv.c — gradients of kn_conv2d_fwd and kn_convt2x2_fwd on one [C, H, W] image
 * (CPU reference).
 *
 * Dense conv (groups == 1): dw += dy·colᵀ with col = im2col(x) (GEMM), dcol = wᵀ·dy (GEMM)
 * then col2im scatters dcol into dx, one input channel per thread. Grouped / depthwise
 * convs run as direct loops: dx by input channel, dw by output channel. convT 2×2 s2
 * regroups dy to [Cout*4, H*W] so that dx = w·dy' and dw += x·dy'ᵀ are plain GEMMs.
 * Every output element is owned by one thread: deterministic for a fixed thread count.
 */
#include "kn.h"

#include <string.h>

static int out_dim(int n, int k, int stride, int pad)
{
    return (n + 2 * pad - k) / stride + 1;
}

static void im2col(float *col, const float *x, int Cin, int H, int W, int k, int stride, int pad,
                   int Ho, int Wo)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < Cin; c++)
        for (int kk = 0; kk < k * k; kk++) {
            int ky = kk / k, kx = kk % k;
            float *dst = col + ((size_t)c * k * k + kk) * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++) {
                int iy = oy * stride - pad + ky;
                for (int ox = 0; ox < Wo; ox++) {
                    int ix = ox * stride - pad + kx;
                    dst[oy * Wo + ox] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                            ? x[((size_t)c * H + iy) * W + ix]
                                            : 0.0f;
                }
            }
        }
}

/* dx[c] = Σ over (ky, kx, oy, ox) of col[c, ky, kx, oy, ox] at the pixel it was read from */
static void col2im(float *dx, const float *col, int Cin, int H, int W, int k, int stride, int pad,
                   int Ho, int Wo)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < Cin; c++) {
        float *xc = dx + (size_t)c * H * W;
        memset(xc, 0, sizeof(float) * (size_t)H * W);
        for (int kk = 0; kk < k * k; kk++) {
            int ky = kk / k, kx = kk % k;
            const float *src = col + ((size_t)c * k * k + kk) * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++) {
                int iy = oy * stride - pad + ky;
                if (iy < 0 || iy >= H) continue;
                for (int ox = 0; ox < Wo; ox++) {
                    int ix = ox * stride - pad + kx;
                    if (ix >= 0 && ix < W) xc[iy * W + ix] += src[oy * Wo + ox];
                }
            }
        }
    }
}

static void bias_grad(float *db, const float *dy, int Cout, size_t HWo)
{
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++) {
        double s = 0;
        for (size_t p = 0; p < HWo; p++)
            s += dy[o * HWo + p];
        db[o] += (float)s;
    }
}

void kn_conv2d_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                   int Cin, int H, int W, int Cout, int k, int stride, int pad, int groups,
                   float *scratch)
{
    int Ho = out_dim(H, k, stride, pad), Wo = out_dim(W, k, stride, pad);
    size_t HWo = (size_t)Ho * Wo;
    if (db) bias_grad(db, dy, Cout, HWo);
    if (groups == 1) {
        int K = Cin * k * k;
        int direct = k == 1 && stride == 1 && pad == 0;
        if (dw) {
            const float *col = x;
            if (!direct) {
                im2col(scratch, x, Cin, H, W, k, stride, pad, Ho, Wo);
                col = scratch;
            }
            kn_gemm(0, 1, Cout, K, (int)HWo, 1.0f, dy, (int)HWo, col, (int)HWo, 1.0f, dw, K);
        }
        if (dx) {
            if (direct) {
                kn_gemm(1, 0, K, (int)HWo, Cout, 1.0f, w, K, dy, (int)HWo, 0.0f, dx, (int)HWo);
            } else {
                kn_gemm(1, 0, K, (int)HWo, Cout, 1.0f, w, K, dy, (int)HWo, 0.0f, scratch, (int)HWo);
                col2im(dx, scratch, Cin, H, W, k, stride, pad, Ho, Wo);
            }
        }
        return;
    }
    int cin_g = Cin / groups, cout_g = Cout / groups;
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int ci = 0; ci < Cin; ci++) {
            int g = ci / cin_g, cl = ci % cin_g;
            float *xc = dx + (size_t)ci * H * W;
            memset(xc, 0, sizeof(float) * (size_t)H * W);
            for (int o = g * cout_g; o < (g + 1) * cout_g; o++) {
                const float *dyo = dy + o * HWo;
                const float *wk = w + ((size_t)o * cin_g + cl) * k * k;
                for (int oy = 0; oy < Ho; oy++)
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * stride - pad + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int ox = 0; ox < Wo; ox++) {
                            float gy = dyo[oy * Wo + ox];
                            for (int kx = 0; kx < k; kx++) {
                                int ix = ox * stride - pad + kx;
                                if (ix >= 0 && ix < W) xc[iy * W + ix] += gy * wk[ky * k + kx];
                            }
                        }
                    }
            }
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < Cout; o++) {
            int g = o / cout_g;
            const float *dyo = dy + o * HWo;
            for (int cl = 0; cl < cin_g; cl++) {
                const float *xc = x + (size_t)(g * cin_g + cl) * H * W;
                float *wk = dw + ((size_t)o * cin_g + cl) * k * k;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        double s = 0;
                        for (int oy = 0; oy < Ho; oy++) {
                            int iy = oy * stride - pad + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int ox = 0; ox < Wo; ox++) {
                                int ix = ox * stride - pad + kx;
                                if (ix >= 0 && ix < W)
                                    s += (double)dyo[oy * Wo + ox] * xc[iy * W + ix];
                            }
                        }
                        wk[ky * k + kx] += (float)s;
                    }
            }
        }
    }
}

size_t kn_convt2x2_bwd_scratch(int H, int W, int Cout)
{
    return (size_t)4 * Cout * H * W;
}

void kn_convt2x2_bwd(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int Cin, int H, int W, int Cout, float *scratch)
{
    size_t HW = (size_t)H * W;
    int Wo = 2 * W;
    if (db) bias_grad(db, dy, Cout, 4 * HW);
    if (!dx && !dw) return;
        /* scratch[(co*4 + a*2 + b), i*W + j] = dy[co, 2i+a, 2j+b] */
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Cout; co++) {
        const float *dyc = dy + (size_t)co * 4 * HW;
        float *s = scratch + (size_t)co * 4 * HW;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const float *o = dyc + (size_t)(2 * i) * Wo + 2 * j;
                size_t p = (size_t)i * W + j;
                s[p] = o[0];
                s[HW + p] = o[1];
                s[2 * HW + p] = o[Wo];
                s[3 * HW + p] = o[Wo + 1];
            }
    }
    int K4 = 4 * Cout;
    if (dx) kn_gemm(0, 0, Cin, (int)HW, K4, 1.0f, w, K4, scratch, (int)HW, 0.0f, dx, (int)HW);
    if (dw) kn_gemm(0, 1, Cin, K4, (int)HW, 1.0f, x, (int)HW, scratch, (int)HW, 1.0f, dw, K4);
}
