/* conv.c — 2-D convolutions on one [C, H, W] image, CPU reference.
 * Dense convs run as im2col + GEMM; grouped (depthwise) convs as direct loops. */
#include "kn.h"

#include <string.h>

static int out_dim(int n, int k, int stride, int pad)
{
    return (n + 2 * pad - k) / stride + 1;
}

size_t kn_conv2d_scratch(int Cin, int H, int W, int k, int stride, int pad, int groups)
{
    if (groups != 1) return 0;
    if (k == 1 && stride == 1 && pad == 0) return 0;
    return (size_t)Cin * k * k * out_dim(H, k, stride, pad) * out_dim(W, k, stride, pad);
}

static void im2col(float *col, const float *x, int Cin, int H, int W, int k, int stride,
                   int pad, int Ho, int Wo)
{
#pragma omp parallel for collapse(2) schedule(static)
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

void kn_conv2d_fwd(float *y, const float *x, const float *w, const float *b, int Cin, int H,
                   int W, int Cout, int k, int stride, int pad, int groups, float *scratch)
{
    int Ho = out_dim(H, k, stride, pad), Wo = out_dim(W, k, stride, pad);
    size_t HWo = (size_t)Ho * Wo;
    if (groups == 1) {
        const float *col = x;
        if (!(k == 1 && stride == 1 && pad == 0)) {
            im2col(scratch, x, Cin, H, W, k, stride, pad, Ho, Wo);
            col = scratch;
        }
        if (b)
            for (int o = 0; o < Cout; o++)
                for (size_t p = 0; p < HWo; p++) y[o * HWo + p] = b[o];
        kn_gemm(0, 0, Cout, (int)HWo, Cin * k * k, 1.0f, w, Cin * k * k, col, (int)HWo,
                b ? 1.0f : 0.0f, y, (int)HWo);
        return;
    }
    int cin_g = Cin / groups, cout_g = Cout / groups;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++) {
        int g = o / cout_g;
        float *yo = y + o * HWo;
        for (size_t p = 0; p < HWo; p++) yo[p] = b ? b[o] : 0.0f;
        for (int ci = 0; ci < cin_g; ci++) {
            const float *xc = x + (size_t)(g * cin_g + ci) * H * W;
            const float *wk = w + ((size_t)o * cin_g + ci) * k * k;
            for (int oy = 0; oy < Ho; oy++)
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int ox = 0; ox < Wo; ox++) {
                        float acc = 0;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * stride - pad + kx;
                            if (ix >= 0 && ix < W) acc += wk[ky * k + kx] * xc[iy * W + ix];
                        }
                        yo[oy * Wo + ox] += acc;
                    }
                }
        }
    }
}

void kn_convt2x2_fwd(float *y, const float *x, const float *w, const float *b, int Cin,
                     int H, int W, int Cout)
{
    /* y[co, 2i+dy, 2j+dx] = b[co] + Σci x[ci,i,j] · w[ci, co, dy, dx] */
    int Wo = 2 * W;
#pragma omp parallel for schedule(static)
    for (int co = 0; co < Cout; co++) {
        float *yc = y + (size_t)co * 4 * H * W;
        for (size_t p = 0; p < (size_t)4 * H * W; p++) yc[p] = b ? b[co] : 0.0f;
        for (int ci = 0; ci < Cin; ci++) {
            const float *xc = x + (size_t)ci * H * W;
            const float *wk = w + ((size_t)ci * Cout + co) * 4;
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    float v = xc[i * W + j];
                    float *o = yc + (size_t)(2 * i) * Wo + 2 * j;
                    o[0] += v * wk[0];
                    o[1] += v * wk[1];
                    o[Wo] += v * wk[2];
                    o[Wo + 1] += v * wk[3];
                }
        }
    }
}
