/* gemm_pk.c — linear layer on pre-packed weights with a fused epilogue (TinyViT / encoder).
 *
 *   y[M,N] = act(x[M,K] · W[N,K]ᵀ + b[N] + res[M,N])
 *
 * W is packed once at load time into panels of KN_PK_NR = 32 output columns, K-major
 * ([panel][k][32], zero-padded past N), so the inner loop reads 2 vectors of W and
 * broadcasts one x element per row. The AVX-512 micro-kernel keeps a 12×32 tile of y in 24
 * registers over the whole K; row blocks of 96 go to OpenMP threads and each packed panel
 * is reused by the 8 tiles of a block while it sits in L1/L2. Tail rows reuse the last row
 * pointer and are not stored; tail columns use store masks. Builds without AVX-512 use a
 * plain loop over the same packed layout. The same tile, fed one row pointer per 3×3 tap,
 * is an implicit-GEMM convolution (kn_conv3_pk_fwd): no im2col buffer.
 */
#include "kn.h"
#include "vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define NR KN_PK_NR
#define MR 12
#define MB (MR * 8)

size_t kn_pack_size(int N, int K)
{
    return (size_t)((N + NR - 1) / NR) * NR * (size_t)K;
}

void kn_pack_w(float *dst, const float *W, int N, int K)
{
    int np = (N + NR - 1) / NR;
    for (int p = 0; p < np; p++)
        for (int k = 0; k < K; k++) {
            float *d = dst + ((size_t)p * K + k) * NR;
            for (int j = 0; j < NR; j++) {
                int n = p * NR + j;
                d[j] = n < N ? W[(size_t)n * K + k] : 0.0f;
            }
        }
}

#if KN_HAVE_AVX512
static inline void ep_store(float *y, const float *res, __m512 c0, __m512 c1, __m512 b0,
                            __m512 b1, __mmask16 m0, __mmask16 m1, int act)
{
    c0 = _mm512_add_ps(c0, b0);
    c1 = _mm512_add_ps(c1, b1);
    if (res) {
        c0 = _mm512_add_ps(c0, _mm512_maskz_loadu_ps(m0, res));
        c1 = _mm512_add_ps(c1, _mm512_maskz_loadu_ps(m1, res + 16));
    }
    if (act == KN_ACT_GELU) {
        c0 = kn_gelu16(c0);
        c1 = kn_gelu16(c1);
    }
    _mm512_mask_storeu_ps(y, m0, c0);
    _mm512_mask_storeu_ps(y + 16, m1, c1);
}

/* One 12×32 tile over nseg K-segments of seglen each: segment s reads row i from
 * aseg[s*MR + i] (rows past mr repeat a valid pointer and are not stored); the packed
 * panel bp is [nseg*seglen][32] with row stride ldb (NR for a packed weight; the weight
 * gradient of kn_conv3_pk_wgrad reads a channel-last map in place with ldb = its channel
 * count). A plain GEMM is one segment; an implicit 3×3 conv has one segment per tap. */
static void tile(float *y, int ldy, const float *const *aseg, int nseg, int seglen, int mr,
                 const float *bp, int ldb, __m512 b0, __m512 b1, __mmask16 m0, __mmask16 m1,
                 const float *res, int ldr, int act)
{
    __m512 z = _mm512_setzero_ps();
    __m512 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    __m512 c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
    __m512 c80 = z, c81 = z, c90 = z, c91 = z, cA0 = z, cA1 = z, cB0 = z, cB1 = z;
    for (int sg = 0; sg < nseg; sg++, bp += (size_t)seglen * ldb) {
        const float *const *a = aseg + (size_t)sg * MR;
        const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
        const float *a6 = a[6], *a7 = a[7], *a8 = a[8], *a9 = a[9], *a10 = a[10], *a11 = a[11];
        for (int k = 0; k < seglen; k++) {
            /* masked: an unpacked B (ldb != NR) has no zero padding past column N */
            __m512 w0 = _mm512_maskz_loadu_ps(m0, bp + (size_t)k * ldb);
            __m512 w1 = _mm512_maskz_loadu_ps(m1, bp + (size_t)k * ldb + 16);
            __m512 v;
#define ROW(ai, ca, cb)                                                                    \
    v = _mm512_set1_ps(ai[k]);                                                             \
    ca = _mm512_fmadd_ps(v, w0, ca);                                                       \
    cb = _mm512_fmadd_ps(v, w1, cb);
            ROW(a0, c00, c01) ROW(a1, c10, c11) ROW(a2, c20, c21) ROW(a3, c30, c31)
            ROW(a4, c40, c41) ROW(a5, c50, c51) ROW(a6, c60, c61) ROW(a7, c70, c71)
            ROW(a8, c80, c81) ROW(a9, c90, c91) ROW(a10, cA0, cA1) ROW(a11, cB0, cB1)
#undef ROW
        }
    }
#define ST(i, ca, cb)                                                                      \
    if (i < mr)                                                                            \
        ep_store(y + (size_t)(i) * ldy, res ? res + (size_t)(i) * ldr : NULL, ca, cb, b0, b1, \
                 m0, m1, act);
    ST(0, c00, c01) ST(1, c10, c11) ST(2, c20, c21) ST(3, c30, c31)
    ST(4, c40, c41) ST(5, c50, c51) ST(6, c60, c61) ST(7, c70, c71)
    ST(8, c80, c81) ST(9, c90, c91) ST(10, cA0, cA1) ST(11, cB0, cB1)
#undef ST
}
#endif

/* Rows [m0, m1) of y = act(xs · Wᵀ + b + res), serial (one row block). */
static void gemm_rows(float *y, int ldy, const float *xs, int lds, const float *Wp,
                      const float *b, const float *res, int ldr, int m0, int m1, int N, int K,
                      int act)
{
    int np = (N + NR - 1) / NR;
#if KN_HAVE_AVX512
    for (int p = 0; p < np; p++) {
        int n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
        __mmask16 k0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
        __mmask16 k1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
        __m512 b0 = b ? _mm512_maskz_loadu_ps(k0, b + n0) : _mm512_setzero_ps();
        __m512 b1 = b ? _mm512_maskz_loadu_ps(k1, b + n0 + 16) : _mm512_setzero_ps();
        const float *bp = Wp + (size_t)p * K * NR;
        for (int m = m0; m < m1; m += MR) {
            int mr = m1 - m < MR ? m1 - m : MR;
            const float *a[MR];
            for (int i = 0; i < MR; i++) a[i] = xs + (size_t)(m + (i < mr ? i : mr - 1)) * lds;
            tile(y + (size_t)m * ldy + n0, ldy, a, 1, K, mr, bp, NR, b0, b1, k0, k1,
                 res ? res + (size_t)m * ldr + n0 : NULL, ldr, act);
        }
    }
#else
    float acc[NR];
    for (int m = m0; m < m1; m++)
        for (int p = 0; p < np; p++) {
            int n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
            const float *bp = Wp + (size_t)p * K * NR;
            const float *xr = xs + (size_t)m * lds;
            memset(acc, 0, sizeof acc);
            for (int k = 0; k < K; k++)
                for (int j = 0; j < NR; j++) acc[j] += xr[k] * bp[(size_t)k * NR + j];
            for (int j = 0; j < nr; j++) {
                float v = acc[j] + (b ? b[n0 + j] : 0.0f);
                if (res) v += res[(size_t)m * ldr + n0 + j];
                y[(size_t)m * ldy + n0 + j] = act == KN_ACT_GELU ? kn_gelu1(v) : v;
            }
        }
#endif
}

/* One LayerNorm row, serial, the arithmetic of kn_layernorm_fwd (double sums). */
static void ln_row(float *y, const float *x, int C, const float *w, const float *b, float eps)
{
    double s = 0, ss = 0;
#if KN_HAVE_AVX512
    if (C % 16 == 0) {
        __m512d vs = _mm512_setzero_pd();
        for (int c = 0; c < C; c += 16) {
            __m512 v = _mm512_loadu_ps(x + c);
            vs = _mm512_add_pd(vs, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            vs = _mm512_add_pd(vs, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
        }
        float m = (float)(_mm512_reduce_add_pd(vs) / C);
        __m512 vm = _mm512_set1_ps(m);
        __m512d vss = _mm512_setzero_pd();
        for (int c = 0; c < C; c += 16) {
            __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + c), vm);
            __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
            __m512d d1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
            vss = _mm512_add_pd(vss, _mm512_mul_pd(d0, d0));
            vss = _mm512_add_pd(vss, _mm512_mul_pd(d1, d1));
        }
        float r = 1.0f / sqrtf((float)(_mm512_reduce_add_pd(vss) / C) + eps);
        __m512 vr = _mm512_set1_ps(r);
        for (int c = 0; c < C; c += 16) {
            __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + c), vm), vr);
            t = _mm512_add_ps(_mm512_mul_ps(t, _mm512_loadu_ps(w + c)), _mm512_loadu_ps(b + c));
            _mm512_storeu_ps(y + c, t);
        }
        return;
    }
#endif
    for (int c = 0; c < C; c++) s += x[c];
    float m = (float)(s / C);
    for (int c = 0; c < C; c++) {
        float d = x[c] - m;
        ss += (double)d * d;
    }
    float r = 1.0f / sqrtf((float)(ss / C) + eps);
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
}

/* LayerNorm of rows [m0, m1) of x into xb[(m1-m0), K]. */
static void ln_rows(float *xb, const float *x, int ldx, int m0, int m1, int K, const float *w,
                    const float *b, float eps)
{
    for (int m = m0; m < m1; m++) ln_row(xb + (size_t)(m - m0) * K, x + (size_t)m * ldx, K, w, b, eps);
}

typedef struct lin_job {
    float *y;
    const float *x, *ln_w, *ln_b, *Wp, *b, *res;
    int ldy, ldx, ldr, M, N, K, act;
    float eps;
} lin_job_t;

/* One 96-row block; with ln_w the block is first LayerNormed into a stack buffer. */
static void linear_item(void *ctx, int blk, int tid)
{
    const lin_job_t *j = ctx;
    (void)tid;
    int m0 = blk * MB, m1 = m0 + MB < j->M ? m0 + MB : j->M, K = j->K;
    if (j->ln_w) {
        float xb[MB * K] __attribute__((aligned(64)));
        ln_rows(xb, j->x, j->ldx, m0, m1, K, j->ln_w, j->ln_b, j->eps);
        gemm_rows(j->y, j->ldy, xb - (size_t)m0 * K, K, j->Wp, j->b, j->res, j->ldr, m0, m1, j->N,
                  K, j->act);
    } else {
        gemm_rows(j->y, j->ldy, j->x, j->ldx, j->Wp, j->b, j->res, j->ldr, m0, m1, j->N, K,
                  j->act);
    }
}

static void linear_pk(float *y, int ldy, const float *x, int ldx, const float *ln_w,
                      const float *ln_b, float eps, const float *Wp, const float *b,
                      const float *res, int ldr, int M, int N, int K, int act)
{
    lin_job_t j = {.y = y, .x = x, .ln_w = ln_w, .ln_b = ln_b, .Wp = Wp, .b = b, .res = res,
                   .ldy = ldy, .ldx = ldx, .ldr = ldr, .M = M, .N = N, .K = K, .act = act,
                   .eps = eps};
    kn_parallel_for((M + MB - 1) / MB, KN_POOL_ANY, linear_item, &j);
}

void kn_linear_pk_fwd(float *y, int ldy, const float *x, int ldx, const float *Wp,
                      const float *b, const float *res, int ldr, int M, int N, int K, int act)
{
    linear_pk(y, ldy, x, ldx, NULL, NULL, 0.0f, Wp, b, res, ldr, M, N, K, act);
}

int kn_linear_pk_ln_fwd(float *y, int ldy, const float *x, int ldx, const float *ln_w,
                        const float *ln_b, float eps, const float *Wp, const float *b,
                        const float *res, int ldr, int M, int N, int K, int act)
{
    if (!ln_w || !ln_b || K < 1 || K > KN_PK_LN_MAXK) return -1;
    linear_pk(y, ldy, x, ldx, ln_w, ln_b, eps, Wp, b, res, ldr, M, N, K, act);
    return 0;
}

size_t kn_mlp_pk_scratch(int C, int Hd)
{
    return (size_t)MB * ((size_t)C + Hd) + 32;
}

typedef struct mlp_job {
    float *y, *scratch;
    const float *x, *ln_w, *ln_b, *W1p, *b1, *W2p, *b2, *res;
    int M, C, Hd;
    float eps;
    size_t per;
} mlp_job_t;

static void mlp_item(void *ctx, int blk, int tid)
{
    const mlp_job_t *j = ctx;
    int m0 = blk * MB, m1 = m0 + MB < j->M ? m0 + MB : j->M, C = j->C, Hd = j->Hd;
    float *base = j->scratch + j->per * (size_t)tid;
    float *xb = (float *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    float *hb = xb + (size_t)MB * C; /* MB*C is a multiple of 16: stays aligned */
    ln_rows(xb, j->x, C, m0, m1, C, j->ln_w, j->ln_b, j->eps);
    gemm_rows(hb - (size_t)m0 * Hd, Hd, xb - (size_t)m0 * C, C, j->W1p, j->b1, NULL, 0, m0, m1, Hd,
              C, KN_ACT_GELU);
    gemm_rows(j->y, C, hb - (size_t)m0 * Hd, Hd, j->W2p, j->b2, j->res, C, m0, m1, C, Hd,
              KN_ACT_NONE);
}

int kn_mlp_pk_fwd(float *y, const float *x, const float *ln_w, const float *ln_b, float eps,
                  const float *W1p, const float *b1, const float *W2p, const float *b2,
                  const float *res, int M, int C, int Hd, float *scratch, int scratch_threads)
{
    if (!ln_w || !ln_b || !scratch || scratch_threads < 1 || C < 1 || Hd < 1) return -1;
    mlp_job_t j = {.y = y, .scratch = scratch, .x = x, .ln_w = ln_w, .ln_b = ln_b, .W1p = W1p,
                   .b1 = b1, .W2p = W2p, .b2 = b2, .res = res, .M = M, .C = C, .Hd = Hd,
                   .eps = eps, .per = kn_mlp_pk_scratch(C, Hd)};
    kn_parallel_for((M + MB - 1) / MB, scratch_threads, mlp_item, &j);
    return 0;
}

/* ---- implicit-GEMM 3×3 conv ---------------------------------------------------------- */

#define CONV_MAXC 4096
#if KN_HAVE_AVX512
static const float g_zeros[CONV_MAXC] __attribute__((aligned(64)));
#endif

typedef struct conv_job {
    float *y;
    const float *x, *Wp, *b;
    int ldy, H, W, C, stride, oy0, M, Wo, N, act;
} conv_job_t;

static void conv_item(void *ctx, int blk, int tid)
{
    const conv_job_t *j = ctx;
    (void)tid;
    int C = j->C, K = 9 * C, Wo = j->Wo, N = j->N;
    int m0 = blk * MB, m1 = m0 + MB < j->M ? m0 + MB : j->M;
#if KN_HAVE_AVX512
    if (C <= CONV_MAXC) {
        int np = (N + NR - 1) / NR;
        const float *aseg[MB / MR][9 * MR];
        for (int m = m0, t = 0; m < m1; m += MR, t++) {
            int mr = m1 - m < MR ? m1 - m : MR;
            for (int i = 0; i < MR; i++) {
                int pix = m + (i < mr ? i : mr - 1);
                int oy = j->oy0 + pix / Wo, ox = pix % Wo;
                for (int tap = 0; tap < 9; tap++) {
                    int iy = oy * j->stride - 1 + tap / 3, ix = ox * j->stride - 1 + tap % 3;
                    aseg[t][tap * MR + i] = (iy >= 0 && iy < j->H && ix >= 0 && ix < j->W)
                                                ? j->x + ((size_t)iy * j->W + ix) * C
                                                : g_zeros;
                }
            }
        }
        for (int p = 0; p < np; p++) {
            int n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
            __mmask16 k0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
            __mmask16 k1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
            __m512 b0 = j->b ? _mm512_maskz_loadu_ps(k0, j->b + n0) : _mm512_setzero_ps();
            __m512 b1 = j->b ? _mm512_maskz_loadu_ps(k1, j->b + n0 + 16) : _mm512_setzero_ps();
            const float *bp = j->Wp + (size_t)p * K * NR;
            for (int m = m0, t = 0; m < m1; m += MR, t++) {
                int mr = m1 - m < MR ? m1 - m : MR;
                tile(j->y + (size_t)m * j->ldy + n0, j->ldy, aseg[t], 9, C, mr, bp, NR, b0, b1, k0,
                     k1, NULL, 0, j->act);
            }
        }
        return;
    }
#endif
    for (int m = m0; m < m1; m++) {
        int oy = j->oy0 + m / Wo, ox = m % Wo;
        for (int n = 0; n < N; n++) {
            const float *bp = j->Wp + (size_t)(n / NR) * K * NR + n % NR;
            float acc = j->b ? j->b[n] : 0.0f;
            for (int tap = 0; tap < 9; tap++) {
                int iy = oy * j->stride - 1 + tap / 3, ix = ox * j->stride - 1 + tap % 3;
                if (iy < 0 || iy >= j->H || ix < 0 || ix >= j->W) continue;
                const float *xr = j->x + ((size_t)iy * j->W + ix) * C;
                for (int c = 0; c < C; c++) acc += xr[c] * bp[(size_t)(tap * C + c) * NR];
            }
            j->y[(size_t)m * j->ldy + n] = j->act == KN_ACT_GELU ? kn_gelu1(acc) : acc;
        }
    }
}

void kn_conv3_pk_fwd(float *y, int ldy, const float *x, int H, int W, int C, int stride,
                     int oy0, int noy, const float *Wp, const float *b, int N, int act)
{
    int Wo = (W - 1) / stride + 1, M = noy * Wo;
    conv_job_t j = {.y = y, .x = x, .Wp = Wp, .b = b, .ldy = ldy, .H = H, .W = W, .C = C,
                    .stride = stride, .oy0 = oy0, .M = M, .Wo = Wo, .N = N, .act = act};
    kn_parallel_for((M + MB - 1) / MB, KN_POOL_ANY, conv_item, &j);
}

/* ---- weight gradient of the 3×3 conv ----------------------------------------------------
 * dwT[(c*9 + tap), n] = Σ_p xpad[c][p + tap] · dy[p, n]: the tile above with A = rows of a
 * zero-padded channel-major copy of x (one image row per K segment, so no edge tests) and
 * B = dy read in place (ldb = N). Items are fixed bands of WG_ROWS image rows, each with its
 * own partial sums; the partials are added in item order, so the result does not depend on
 * the thread count or on which thread ran which band. */

#define WG_ROWS 4

static size_t wg_pad_floats(int H, int W, int C)
{
    return ((size_t)C * (H + 2) * (W + 2) + 15) / 16 * 16;
}

static int wg_items(int H)
{
    return (H + WG_ROWS - 1) / WG_ROWS;
}

size_t kn_conv3_pk_wgrad_scratch(int H, int W, int C, int N)
{
    return wg_pad_floats(H, W, C) + (size_t)wg_items(H) * ((size_t)9 * C * N + N);
}

typedef struct wg_job {
    const float *dy, *x;
    float *xp, *part;
    int H, W, C, N;
} wg_job_t;

/* padded row yy (0 .. H+1) of every channel */
static void wg_pad_item(void *ctx, int yy, int tid)
{
    const wg_job_t *j = ctx;
    (void)tid;
    int W = j->W, C = j->C, Wp = W + 2;
    size_t plane = (size_t)(j->H + 2) * Wp;
    for (int c = 0; c < C; c++) {
        float *row = j->xp + c * plane + (size_t)yy * Wp;
        if (yy == 0 || yy == j->H + 1) {
            memset(row, 0, sizeof(float) * (size_t)Wp);
            continue;
        }
        const float *src = j->x + (size_t)(yy - 1) * W * C + c;
        row[0] = row[W + 1] = 0.0f;
        for (int x = 0; x < W; x++) row[1 + x] = src[(size_t)x * C];
    }
}

static void wg_item(void *ctx, int it, int tid)
{
    const wg_job_t *j = ctx;
    (void)tid;
    int W = j->W, C = j->C, N = j->N, M = 9 * C, Wp = W + 2;
    int y0 = it * WG_ROWS, y1 = y0 + WG_ROWS < j->H ? y0 + WG_ROWS : j->H;
    size_t plane = (size_t)(j->H + 2) * Wp;
    float *part = j->part + (size_t)it * ((size_t)M * N + N), *pdb = part + (size_t)M * N;
    const float *dy = j->dy + (size_t)y0 * W * N;
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        for (int p = 0; p < (y1 - y0) * W; p++) s += dy[(size_t)p * N + n];
        pdb[n] = (float)s;
    }
#if KN_HAVE_AVX512
    int np = (N + NR - 1) / NR;
    const float *aseg[WG_ROWS * MR];
    __m512 z = _mm512_setzero_ps();
    for (int m = 0; m < M; m += MR) {
        int mr = M - m < MR ? M - m : MR;
        for (int y = y0; y < y1; y++)
            for (int i = 0; i < MR; i++) {
                int r = m + (i < mr ? i : mr - 1), c = r / 9, tap = r % 9;
                aseg[(y - y0) * MR + i] = j->xp + c * plane + (size_t)(y + tap / 3) * Wp + tap % 3;
            }
        for (int p = 0; p < np; p++) {
            int n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
            __mmask16 k0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
            __mmask16 k1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
            tile(part + (size_t)m * N + n0, N, aseg, y1 - y0, W, mr, dy + n0, N, z, z, k0, k1,
                 NULL, 0, KN_ACT_NONE);
        }
    }
#else
    for (int r = 0; r < M; r++) {
        int c = r / 9, tap = r % 9;
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int y = y0; y < y1; y++) {
                const float *a = j->xp + c * plane + (size_t)(y + tap / 3) * Wp + tap % 3;
                const float *b = j->dy + (size_t)y * W * N + n;
                for (int x = 0; x < W; x++) acc += a[x] * b[(size_t)x * N];
            }
            part[(size_t)r * N + n] = acc;
        }
    }
#endif
}

void kn_conv3_pk_wgrad(float *dw, float *db, const float *dy, const float *x, int H, int W,
                       int C, int N, float *scratch)
{
    if (H < 1 || W < 1 || C < 1 || N < 1 || (!dw && !db)) return;
    wg_job_t j = {.dy = dy, .x = x, .xp = scratch, .part = scratch + wg_pad_floats(H, W, C),
                  .H = H, .W = W, .C = C, .N = N};
    int ni = wg_items(H), M = 9 * C;
    kn_parallel_for(H + 2, KN_POOL_ANY, wg_pad_item, &j);
    kn_parallel_for(ni, KN_POOL_ANY, wg_item, &j);
    size_t per = (size_t)M * N + N;
    /* the partials are summed in item order, in double, one column block of rows at a time */
    double acc[16 * 64];
    for (int r0 = 0; r0 <= M; r0 += 16) {
        int nr = M + 1 - r0 < 16 ? M + 1 - r0 : 16; /* row M holds the bias partials */
        for (int c0 = 0; c0 < N; c0 += 64) {
            int nc = N - c0 < 64 ? N - c0 : 64;
            for (int i = 0; i < nr * nc; i++) acc[i] = 0.0;
            for (int it = 0; it < ni; it++) {
                const float *pi = j.part + it * per + (size_t)r0 * N + c0;
                for (int r = 0; r < nr; r++)
                    for (int c = 0; c < nc; c++) acc[r * nc + c] += pi[(size_t)r * N + c];
            }
            for (int r = 0; r < nr; r++)
                for (int c = 0; c < nc; c++) {
                    float v = (float)acc[r * nc + c];
                    if (r0 + r < M) {
                        if (dw) dw[(size_t)(c0 + c) * M + r0 + r] += v;
                    } else if (db) {
                        db[c0 + c] += v;
                    }
                }
        }
    }
}

/* ---- plain row-major GEMM on the same tile (weight gradients) ---------------------------
 * C[M,N] (+)= A[M,K]·B[K,N] with both operands read in place: A rows broadcast, B in
 * 32-column panels (ldb). Items are blocks of up to 96 rows × 128 columns of C, each owned by
 * one item and summed over K in blocks of GN_KB in a fixed order. */

#define GN_KB 256
#define GN_PG 4 /* panels per item */

typedef struct gn_job {
    float *c;
    const float *a, *b;
    int ldc, lda, ldb, M, N, K, acc, nmb;
} gn_job_t;

static void gn_item(void *ctx, int it, int tid)
{
    const gn_job_t *j = ctx;
    (void)tid;
    int mb = it % j->nmb, pg = it / j->nmb;
    int m0 = mb * MB, m1 = m0 + MB < j->M ? m0 + MB : j->M;
    int p0 = pg * GN_PG, np = (j->N + NR - 1) / NR, p1 = p0 + GN_PG < np ? p0 + GN_PG : np;
#if KN_HAVE_AVX512
    __m512 z = _mm512_setzero_ps();
    for (int k0 = 0; k0 < j->K; k0 += GN_KB) {
        int kl = j->K - k0 < GN_KB ? j->K - k0 : GN_KB;
        int first = k0 == 0 && !j->acc;
        for (int m = m0; m < m1; m += MR) {
            int mr = m1 - m < MR ? m1 - m : MR;
            const float *a[MR];
            for (int i = 0; i < MR; i++) a[i] = j->a + (size_t)(m + (i < mr ? i : mr - 1)) * j->lda + k0;
            for (int p = p0; p < p1; p++) {
                int n0 = p * NR, nr = j->N - n0 < NR ? j->N - n0 : NR;
                __mmask16 q0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
                __mmask16 q1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
                float *cc = j->c + (size_t)m * j->ldc + n0;
                tile(cc, j->ldc, a, 1, kl, mr, j->b + (size_t)k0 * j->ldb + n0, j->ldb, z, z, q0,
                     q1, first ? NULL : cc, j->ldc, KN_ACT_NONE);
            }
        }
    }
#else
    for (int m = m0; m < m1; m++)
        for (int n = p0 * NR; n < p1 * NR && n < j->N; n++) {
            float s = j->acc ? j->c[(size_t)m * j->ldc + n] : 0.0f;
            for (int k = 0; k < j->K; k++)
                s += j->a[(size_t)m * j->lda + k] * j->b[(size_t)k * j->ldb + n];
            j->c[(size_t)m * j->ldc + n] = s;
        }
#endif
}

void kn_gemm_nn_pk(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int M,
                   int N, int K, int acc)
{
    if (M < 1 || N < 1) return;
    if (K < 1) {
        if (!acc)
            for (int m = 0; m < M; m++) memset(c + (size_t)m * ldc, 0, sizeof(float) * (size_t)N);
        return;
    }
    int nmb = (M + MB - 1) / MB, npg = ((N + NR - 1) / NR + GN_PG - 1) / GN_PG;
    gn_job_t j = {.c = c, .a = a, .b = b, .ldc = ldc, .lda = lda, .ldb = ldb, .M = M, .N = N,
                  .K = K, .acc = acc, .nmb = nmb};
    kn_parallel_for(nmb * npg, KN_POOL_ANY, gn_item, &j);
}
