/* dwconv.c — depthwise 3×3 convolution (pad 1) on channel-last maps, and the 3×3 im2col
 * gathers that turn dense 3×3 convolutions into kn_linear_pk_fwd (TinyViT / encoder).
 *
 * Channel-last ([H, W, C], token-major) keeps the channel loop innermost and contiguous, so
 * the AVX-512 body handles 16 channels per vector with masked tails; OpenMP splits output
 * rows. The row-level forms let a caller stream rows through a small ring buffer (fused
 * MBConv) or build im2col rows for one output row band at a time (implicit GEMM). Column order of both im2col variants is tap-major, channel fastest:
 * col[p, (ky*3 + kx)*C + c], matching a weight repacked as [Cout][ky][kx][Cin].
 */
#include "kn.h"
#include "vmath.h"

#include <string.h>

#if KN_HAVE_AVX512
/* One 16-channel slice of output pixels [oxa, oxb): taps held in registers. */
static void dw_slice16(float *y, const float *const rows[3], const float *w9c,
                       const float *b, int W, int oxa, int oxb, int C, int c, int stride, int act)
{
    __mmask16 m = C - c >= 16 ? 0xffff : (__mmask16)((1u << (C - c)) - 1);
    __m512 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = _mm512_maskz_loadu_ps(m, w9c + (size_t)t * C + c);
    __m512 bias = b ? _mm512_maskz_loadu_ps(m, b + c) : _mm512_setzero_ps();
    for (int ox = oxa; ox < oxb; ox++) {
        int ix0 = ox * stride - 1;
        __m512 acc = bias;
        if (ix0 >= 0 && ix0 + 2 < W) { /* interior: all three columns exist */
#pragma GCC unroll 3
            for (int ky = 0; ky < 3; ky++) {
                if (!rows[ky]) continue;
                const float *p = rows[ky] + (size_t)ix0 * C + c;
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p), wv[ky * 3], acc);
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + C), wv[ky * 3 + 1], acc);
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + 2 * C), wv[ky * 3 + 2], acc);
            }
        } else {
            for (int ky = 0; ky < 3; ky++) {
                if (!rows[ky]) continue;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = ix0 + kx;
                    if (ix < 0 || ix >= W) continue;
                    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, rows[ky] + (size_t)ix * C + c),
                                          wv[ky * 3 + kx], acc);
                }
            }
        }
        if (act == KN_ACT_GELU) acc = kn_gelu16(acc);
        _mm512_mask_storeu_ps(y + (size_t)ox * C + c, m, acc);
    }
}
#endif

void kn_dwconv3_row_nhwc(float *y, const float *r0, const float *r1, const float *r2,
                         const float *w9c, const float *b, int W, int C, int stride, int act)
{
    int Wo = (W - 1) / stride + 1;
    const float *rows[3] = {r0, r1, r2};
#if KN_HAVE_AVX512
    /* Pixel blocks of 8 keep the three input row pieces in L1 while every slice passes. */
    for (int oxa = 0; oxa < Wo; oxa += 8) {
        int oxb = oxa + 8 < Wo ? oxa + 8 : Wo;
        for (int c = 0; c < C; c += 16) dw_slice16(y, rows, w9c, b, W, oxa, oxb, C, c, stride, act);
    }
#else
    for (int ox = 0; ox < Wo; ox++) {
        float *yo = y + (size_t)ox * C;
        int ix0 = ox * stride - 1;
        for (int c = 0; c < C; c++) {
            float acc = b ? b[c] : 0.0f;
            for (int ky = 0; ky < 3; ky++) {
                if (!rows[ky]) continue;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = ix0 + kx;
                    if (ix < 0 || ix >= W) continue;
                    acc += rows[ky][(size_t)ix * C + c] * w9c[(size_t)(ky * 3 + kx) * C + c];
                }
            }
            yo[c] = act == KN_ACT_GELU ? kn_gelu1(acc) : acc;
        }
    }
#endif
}

typedef struct map_job {
    float *y;
    const float *x, *w9c, *b;
    int H, W, C, stride, act, oy0;
} map_job_t;

static void dw_item(void *ctx, int oy, int tid)
{
    const map_job_t *j = ctx;
    (void)tid;
    int Wo = (j->W - 1) / j->stride + 1;
    const float *r[3];
    for (int ky = 0; ky < 3; ky++) {
        int iy = oy * j->stride - 1 + ky;
        r[ky] = iy >= 0 && iy < j->H ? j->x + (size_t)iy * j->W * j->C : NULL;
    }
    kn_dwconv3_row_nhwc(j->y + (size_t)oy * Wo * j->C, r[0], r[1], r[2], j->w9c, j->b, j->W, j->C,
                        j->stride, j->act);
}

void kn_dwconv3_nhwc_fwd(float *y, const float *x, const float *w9c, const float *b, int H,
                         int W, int C, int stride, int act)
{
    map_job_t j = {.y = y, .x = x, .w9c = w9c, .b = b, .H = H, .W = W, .C = C, .stride = stride,
                   .act = act};
    kn_parallel_for((H - 1) / stride + 1, KN_POOL_ANY, dw_item, &j);
}

static void im2col_nhwc_item(void *ctx, int r, int tid)
{
    const map_job_t *j = ctx;
    (void)tid;
    int H = j->H, W = j->W, C = j->C, stride = j->stride, oy = j->oy0 + r;
    int Wo = (W - 1) / stride + 1;
    size_t K = (size_t)9 * C;
    for (int ox = 0; ox < Wo; ox++) {
        float *d = j->y + ((size_t)r * Wo + ox) * K;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy * stride - 1 + ky;
            for (int kx = 0; kx < 3; kx++, d += C) {
                int ix = ox * stride - 1 + kx;
                int in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                const float *src = in ? j->x + ((size_t)iy * W + ix) * C : NULL;
#if KN_HAVE_AVX512
                if (C % 16 == 0) { /* short rows: inline copies beat memcpy calls */
                    for (int c = 0; c < C; c += 16)
                        _mm512_storeu_ps(d + c, in ? _mm512_loadu_ps(src + c) : _mm512_setzero_ps());
                    continue;
                }
#endif
                if (in) memcpy(d, src, sizeof(float) * C);
                else memset(d, 0, sizeof(float) * C);
            }
        }
    }
}

void kn_im2col3_nhwc(float *col, const float *x, int H, int W, int C, int stride, int oy0,
                     int noy)
{
    map_job_t j = {.y = col, .x = x, .H = H, .W = W, .C = C, .stride = stride, .oy0 = oy0};
    kn_parallel_for(noy, KN_POOL_ANY, im2col_nhwc_item, &j);
}

static void im2col_chw_item(void *ctx, int r, int tid)
{
    const map_job_t *j = ctx;
    (void)tid;
    int H = j->H, W = j->W, C = j->C, stride = j->stride, oy = j->oy0 + r;
    int Wo = (W - 1) / stride + 1;
    size_t K = (size_t)9 * C;
    for (int ox = 0; ox < Wo; ox++) {
        float *d = j->y + ((size_t)r * Wo + ox) * K;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy * stride - 1 + ky;
            for (int kx = 0; kx < 3; kx++, d += C) {
                int ix = ox * stride - 1 + kx;
                int in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                for (int c = 0; c < C; c++) d[c] = in ? j->x[((size_t)c * H + iy) * W + ix] : 0.0f;
            }
        }
    }
}

void kn_im2col3_chw(float *col, const float *x, int C, int H, int W, int stride, int oy0,
                    int noy)
{
    map_job_t j = {.y = col, .x = x, .H = H, .W = W, .C = C, .stride = stride, .oy0 = oy0};
    kn_parallel_for(noy, KN_POOL_ANY, im2col_chw_item, &j);
}
