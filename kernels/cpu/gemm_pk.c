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

#include <omp.h>
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
 * panel bp is [nseg*seglen][32]. A plain GEMM is one segment; an implicit 3×3 conv has one
 * segment per tap. */
static void tile(float *y, int ldy, const float *const *aseg, int nseg, int seglen, int mr,
                 const float *bp, __m512 b0, __m512 b1, __mmask16 m0, __mmask16 m1,
                 const float *res, int ldr, int act)
{
    __m512 z = _mm512_setzero_ps();
    __m512 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    __m512 c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
    __m512 c80 = z, c81 = z, c90 = z, c91 = z, cA0 = z, cA1 = z, cB0 = z, cB1 = z;
    for (int sg = 0; sg < nseg; sg++, bp += (size_t)seglen * NR) {
        const float *const *a = aseg + (size_t)sg * MR;
        const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
        const float *a6 = a[6], *a7 = a[7], *a8 = a[8], *a9 = a[9], *a10 = a[10], *a11 = a[11];
        for (int k = 0; k < seglen; k++) {
            __m512 w0 = _mm512_load_ps(bp + (size_t)k * NR);
            __m512 w1 = _mm512_load_ps(bp + (size_t)k * NR + 16);
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
            tile(y + (size_t)m * ldy + n0, ldy, a, 1, K, mr, bp, b0, b1, k0, k1,
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

/* LayerNorm of rows [m0, m1) of x into xb[(m1-m0), K] (kn_layernorm_fwd arithmetic). */
static void ln_rows(float *xb, const float *x, int ldx, int m0, int m1, int K, const float *w,
                    const float *b, float eps)
{
    if (ldx != K) {
        for (int m = m0; m < m1; m++)
            memcpy(xb + (size_t)(m - m0) * K, x + (size_t)m * ldx, sizeof(float) * K);
        kn_layernorm_fwd(xb, NULL, NULL, xb, w, b, m1 - m0, K, eps);
    } else {
        kn_layernorm_fwd(xb, NULL, NULL, x + (size_t)m0 * K, w, b, m1 - m0, K, eps);
    }
}

/* With ln_w != NULL each 96-row block of x is first LayerNormed into a stack buffer and
 * the tiles read that (kn_linear_pk_ln_fwd). */
static void linear_pk(float *y, int ldy, const float *x, int ldx, const float *ln_w,
                      const float *ln_b, float eps, const float *Wp, const float *b,
                      const float *res, int ldr, int M, int N, int K, int act)
{
    int nblk = (M + MB - 1) / MB;
#pragma omp parallel for schedule(dynamic, 1)
    for (int blk = 0; blk < nblk; blk++) {
        int m0 = blk * MB, m1 = m0 + MB < M ? m0 + MB : M;
        float xb[ln_w ? MB * K : 1] __attribute__((aligned(64)));
        if (ln_w) {
            ln_rows(xb, x, ldx, m0, m1, K, ln_w, ln_b, eps);
            gemm_rows(y, ldy, xb - (size_t)m0 * K, K, Wp, b, res, ldr, m0, m1, N, K, act);
        } else {
            gemm_rows(y, ldy, x, ldx, Wp, b, res, ldr, m0, m1, N, K, act);
        }
    }
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

int kn_mlp_pk_fwd(float *y, const float *x, const float *ln_w, const float *ln_b, float eps,
                  const float *W1p, const float *b1, const float *W2p, const float *b2,
                  const float *res, int M, int C, int Hd, float *scratch, int scratch_threads)
{
    if (!ln_w || !ln_b || !scratch || scratch_threads < 1 || C < 1 || Hd < 1) return -1;
    int nblk = (M + MB - 1) / MB;
    size_t per = kn_mlp_pk_scratch(C, Hd);
    int nt = omp_get_max_threads() < scratch_threads ? omp_get_max_threads() : scratch_threads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int blk = 0; blk < nblk; blk++) {
        int m0 = blk * MB, m1 = m0 + MB < M ? m0 + MB : M;
        float *base = scratch + per * (size_t)omp_get_thread_num();
        float *xb = (float *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
        float *hb = xb + (size_t)MB * C; /* MB*C is a multiple of 16: stays aligned */
        ln_rows(xb, x, C, m0, m1, C, ln_w, ln_b, eps);
        gemm_rows(hb - (size_t)m0 * Hd, Hd, xb - (size_t)m0 * C, C, W1p, b1, NULL, 0, m0, m1, Hd, C,
                  KN_ACT_GELU);
        gemm_rows(y, C, hb - (size_t)m0 * Hd, Hd, W2p, b2, res, C, m0, m1, C, Hd, KN_ACT_NONE);
    }
    return 0;
}

/* ---- implicit-GEMM 3×3 conv ---------------------------------------------------------- */

#define CONV_MAXC 4096
static const float g_zeros[CONV_MAXC] __attribute__((aligned(64)));

void kn_conv3_pk_fwd(float *y, int ldy, const float *x, int H, int W, int C, int stride,
                     int oy0, int noy, const float *Wp, const float *b, int N, int act)
{
    int Wo = (W - 1) / stride + 1, M = noy * Wo, K = 9 * C;
    int np = (N + NR - 1) / NR, nblk = (M + MB - 1) / MB;
#if KN_HAVE_AVX512
    if (C <= CONV_MAXC) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int blk = 0; blk < nblk; blk++) {
            int m0 = blk * MB, m1 = m0 + MB < M ? m0 + MB : M;
            const float *aseg[MB / MR][9 * MR];
            for (int m = m0, t = 0; m < m1; m += MR, t++) {
                int mr = m1 - m < MR ? m1 - m : MR;
                for (int i = 0; i < MR; i++) {
                    int pix = m + (i < mr ? i : mr - 1);
                    int oy = oy0 + pix / Wo, ox = pix % Wo;
                    for (int tap = 0; tap < 9; tap++) {
                        int iy = oy * stride - 1 + tap / 3, ix = ox * stride - 1 + tap % 3;
                        aseg[t][tap * MR + i] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                                    ? x + ((size_t)iy * W + ix) * C
                                                    : g_zeros;
                    }
                }
            }
            for (int p = 0; p < np; p++) {
                int n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
                __mmask16 k0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
                __mmask16 k1 = nr >= 32 ? 0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
                __m512 b0 = b ? _mm512_maskz_loadu_ps(k0, b + n0) : _mm512_setzero_ps();
                __m512 b1 = b ? _mm512_maskz_loadu_ps(k1, b + n0 + 16) : _mm512_setzero_ps();
                const float *bp = Wp + (size_t)p * K * NR;
                for (int m = m0, t = 0; m < m1; m += MR, t++) {
                    int mr = m1 - m < MR ? m1 - m : MR;
                    tile(y + (size_t)m * ldy + n0, ldy, aseg[t], 9, C, mr, bp, b0, b1, k0, k1,
                         NULL, 0, act);
                }
            }
        }
        return;
    }
#endif
#pragma omp parallel for schedule(dynamic, 1)
    for (int m = 0; m < M; m++) {
        int oy = oy0 + m / Wo, ox = m % Wo;
        for (int n = 0; n < N; n++) {
            const float *bp = Wp + (size_t)(n / NR) * K * NR + n % NR;
            float acc = b ? b[n] : 0.0f;
            for (int tap = 0; tap < 9; tap++) {
                int iy = oy * stride - 1 + tap / 3, ix = ox * stride - 1 + tap % 3;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const float *xr = x + ((size_t)iy * W + ix) * C;
                for (int c = 0; c < C; c++) acc += xr[c] * bp[(size_t)(tap * C + c) * NR];
            }
            y[(size_t)m * ldy + n] = act == KN_ACT_GELU ? kn_gelu1(acc) : acc;
        }
    }
}
