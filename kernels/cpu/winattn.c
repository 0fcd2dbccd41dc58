/* winattn.c — TinyViT windowed multi-head attention on an image-ordered qkv map
 * (TinyViT / encoder).
 *
 * The map is split into ws×ws windows after padding bottom/right to a multiple of ws. A
 * pad position contributes the constant qkv row `padrow` (TinyViT pads before the
 * attention LayerNorm, so a pad token is qkv(LN bias), not zero) and is not masked as a
 * key; its own output is dropped, so only real query tokens are computed and written.
 * One OpenMP task per window: one pass over its rows gathers every head's keys
 * (transposed) and values into the thread's scratch slice, so the rows are read as
 * contiguous 12·heads·d-byte runs (the map is usually larger than the cache). The AVX-512
 * path (head dim 32) takes the real queries four at a time: logits as a 4×64 register
 * tile over the transposed keys, exact softmax per row, then P·V with 8 accumulators.
 * Other head dims and non-AVX-512 builds take the plain loop. With a packed projection
 * the window's outputs are projected (one small GEMM) and added to `out` in place, so the
 * attention map never exists.
 */
#include "kn.h"
#include "vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAXN KN_WINATTN_MAXN
#define QB 4 /* queries per block in the AVX-512 path */

#if KN_HAVE_AVX512
/* Queries q[0..m) (m ≤ QB; missing rows repeat the last) against keys Kt[32][npad] and
 * values V[n][32]; bias rows brow[r] (or NULL); writes o[r][0..32). P is QB×npad scratch. */
static void attend4(float *const o[QB], const float *const q[QB], const float *const brow[QB],
                    int m, const float *Kt, const float *V, float *P, int n, int npad,
                    float scale)
{
    __m512 vmax[QB];
    for (int r = 0; r < QB; r++) vmax[r] = _mm512_set1_ps(-INFINITY);
    for (int j0 = 0; j0 < npad; j0 += 64) {
        if (npad - j0 == 16) { /* one vector left (e.g. 208 = 3·64 + 16): no 4-wide tile */
            __m512 t[QB];
            for (int r = 0; r < QB; r++) t[r] = _mm512_setzero_ps();
            for (int c = 0; c < 32; c++) {
                __m512 k0 = _mm512_load_ps(Kt + (size_t)c * npad + j0);
#pragma GCC unroll 4
                for (int r = 0; r < QB; r++) t[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][c]), k0, t[r]);
            }
            __mmask16 mk = n - j0 >= 16 ? 0xffff : (__mmask16)((1u << (n - j0)) - 1);
            for (int r = 0; r < QB; r++) {
                __m512 l = _mm512_mul_ps(t[r], _mm512_set1_ps(scale));
                if (brow[r]) l = _mm512_add_ps(l, _mm512_maskz_loadu_ps(mk, brow[r] + j0));
                l = _mm512_mask_blend_ps(mk, _mm512_set1_ps(-INFINITY), l);
                _mm512_store_ps(P + (size_t)r * npad + j0, l);
                vmax[r] = _mm512_max_ps(vmax[r], l);
            }
            break;
        }
        __m512 s[QB][4];
#pragma GCC unroll 4
        for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) s[r][v] = _mm512_setzero_ps();
        const float *kb = Kt + j0;
        for (int c = 0; c < 32; c++) {
            const float *kr = kb + (size_t)c * npad;
            __m512 k0 = _mm512_load_ps(kr), k1 = _mm512_load_ps(kr + 16);
            __m512 k2 = _mm512_load_ps(kr + 32), k3 = _mm512_load_ps(kr + 48);
#pragma GCC unroll 4
            for (int r = 0; r < QB; r++) {
                __m512 qc = _mm512_set1_ps(q[r][c]);
                s[r][0] = _mm512_fmadd_ps(qc, k0, s[r][0]);
                s[r][1] = _mm512_fmadd_ps(qc, k1, s[r][1]);
                s[r][2] = _mm512_fmadd_ps(qc, k2, s[r][2]);
                s[r][3] = _mm512_fmadd_ps(qc, k3, s[r][3]);
            }
        }
        int nv = (npad - j0) / 16 < 4 ? (npad - j0) / 16 : 4;
#pragma GCC unroll 4
        for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                if (v >= nv) break;
                int j = j0 + 16 * v;
                __mmask16 mk = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
                __m512 l = _mm512_mul_ps(s[r][v], _mm512_set1_ps(scale));
                if (brow[r]) l = _mm512_add_ps(l, _mm512_maskz_loadu_ps(mk, brow[r] + j));
                l = _mm512_mask_blend_ps(mk, _mm512_set1_ps(-INFINITY), l);
                _mm512_store_ps(P + (size_t)r * npad + j, l);
                vmax[r] = _mm512_max_ps(vmax[r], l);
            }
    }
    float inv[QB];
    for (int r = 0; r < QB; r++) {
        __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax[r]));
        __m512 vsum = _mm512_setzero_ps();
        float *pr = P + (size_t)r * npad;
        for (int j = 0; j < npad; j += 16) {
            __mmask16 mk = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
            __m512 e = _mm512_maskz_mov_ps(mk, kn_exp16(_mm512_sub_ps(_mm512_load_ps(pr + j), mx)));
            _mm512_store_ps(pr + j, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        inv[r] = 1.0f / _mm512_reduce_add_ps(vsum);
    }
    __m512 a[QB][2];
#pragma GCC unroll 4
    for (int r = 0; r < QB; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
    for (int j = 0; j < n; j++) {
        __m512 v0 = _mm512_load_ps(V + (size_t)j * 32), v1 = _mm512_load_ps(V + (size_t)j * 32 + 16);
#pragma GCC unroll 4
        for (int r = 0; r < QB; r++) {
            __m512 p = _mm512_set1_ps(P[(size_t)r * npad + j]);
            a[r][0] = _mm512_fmadd_ps(p, v0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(p, v1, a[r][1]);
        }
    }
    for (int r = 0; r < m; r++) {
        __m512 vi = _mm512_set1_ps(inv[r]);
        _mm512_storeu_ps(o[r], _mm512_mul_ps(a[r][0], vi));
        _mm512_storeu_ps(o[r] + 16, _mm512_mul_ps(a[r][1], vi));
    }
}
#endif

size_t kn_winattn_scratch(int heads, int d, int ws)
{
    size_t n = (size_t)ws * ws, npad = (n + 15) & ~(size_t)15;
    /* keys transposed [heads][d][npad] (+64 slack), values [heads][n][d], logits QB×npad,
     * then for the fused projection the window's outputs and projected rows [n][C] each */
    return (size_t)heads * d * npad + 64 + (size_t)heads * n * d + QB * npad + 64 + 16 +
           2 * n * (size_t)heads * d + 16;
}

typedef struct win_job {
    float *out, *scratch;
    const float *qkv, *padrow, *bias, *proj_wp, *proj_b;
    int ldo, H, W, heads, d, ws, nwx;
    float scale;
    size_t per;
} win_job_t;

static void win_item(void *ctx, int wi, int tid)
{
    const win_job_t *jb = ctx;
    float *out = jb->out;
    const float *qkv = jb->qkv, *padrow = jb->padrow, *bias = jb->bias;
    const float *proj_wp = jb->proj_wp, *proj_b = jb->proj_b;
    int ldo = jb->ldo, H = jb->H, W = jb->W, heads = jb->heads, d = jb->d, ws = jb->ws;
    int nwx = jb->nwx, n = ws * ws, npad = (n + 15) & ~15, C = heads * d, ld = 3 * C;
    float scale = jb->scale;
    {
        int wy = wi / nwx, wx = wi % nwx;
        float *base = jb->scratch + jb->per * (size_t)tid;
        float *Kt = (float *)(((uintptr_t)base + 63) & ~(uintptr_t)63); /* [heads][d][npad] */
        float *V = Kt + (size_t)heads * d * npad + 64;                     /* [heads][n][d] */
        float *S = V + (size_t)heads * n * d;                              /* [QB][npad] */
        S = (float *)(((uintptr_t)S + 63) & ~(uintptr_t)63);
        float *Ob = (float *)(((uintptr_t)(S + QB * npad + 64) + 63) & ~(uintptr_t)63); /* [n][C] */
        float *Pb = Ob + (size_t)n * C;                                                  /* [n][C] */
        const float *rows[MAXN];
        int real[MAXN], nreal = 0;
#if KN_HAVE_AVX512
        /* The map is usually out of cache: request all of the window's rows (and, with the
         * projection, its output rows) up front so the misses overlap. */
        for (int t = 0; t < n; t++) {
            int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
            if (iy >= H || ix >= W) continue;
            const char *rp = (const char *)(qkv + ((size_t)iy * W + ix) * ld);
            for (size_t off = 0; off < (size_t)ld * sizeof(float); off += 64)
                _mm_prefetch(rp + off, _MM_HINT_T0);
            if (proj_wp) {
                const char *op = (const char *)(out + ((size_t)iy * W + ix) * ldo);
                for (size_t off = 0; off < (size_t)C * sizeof(float); off += 64)
                    _mm_prefetch(op + off, _MM_HINT_T1);
            }
        }
#endif
        /* One pass over the window's rows gathers every head's keys and values. */
        for (int t = 0; t < n; t++) {
            int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
            int in = iy < H && ix < W;
            rows[t] = in ? qkv + ((size_t)iy * W + ix) * ld : padrow;
            if (in) real[nreal++] = t;
            for (int h = 0; h < heads; h++) {
                const float *kr = rows[t] + h * 3 * d + d, *vr = kr + d;
                float *kt = Kt + (size_t)h * d * npad;
                for (int c = 0; c < d; c++) kt[c * npad + t] = kr[c];
                memcpy(V + ((size_t)h * n + t) * d, vr, sizeof(float) * d);
            }
        }
        for (int h = 0; h < heads; h++)
            for (int c = 0; c < d; c++)
                for (int t = n; t < npad; t++) Kt[((size_t)h * d + c) * npad + t] = 0.0f;
        memset(Kt + (size_t)heads * d * npad, 0, 64 * sizeof(float));
        for (int h = 0; h < heads; h++) {
            const float *bh = bias ? bias + (size_t)h * n * n : NULL;
            const float *kt = Kt + (size_t)h * d * npad, *vh = V + (size_t)h * n * d;
#if KN_HAVE_AVX512
            if (d == 32) {
                for (int g = 0; g < nreal; g += QB) {
                    int m = nreal - g < QB ? nreal - g : QB;
                    float *o[QB];
                    const float *q[QB], *brow[QB];
                    for (int r = 0; r < QB; r++) {
                        int t = real[g + (r < m ? r : m - 1)];
                        int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
                        q[r] = rows[t] + h * 3 * d;
                        brow[r] = bh ? bh + (size_t)t * n : NULL;
                        o[r] = proj_wp ? Ob + (size_t)(g + (r < m ? r : m - 1)) * C + h * d
                                       : out + ((size_t)iy * W + ix) * ldo + h * d;
                    }
                    attend4(o, q, brow, m, kt, vh, S, n, npad, scale);
                }
                continue;
            }
#endif
            for (int g = 0; g < nreal; g++) {
                int t = real[g];
                int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
                const float *q = rows[t] + h * 3 * d;
                const float *bt = bh ? bh + (size_t)t * n : NULL;
                float *o = proj_wp ? Ob + (size_t)g * C + h * d
                                   : out + ((size_t)iy * W + ix) * ldo + h * d;
                float mx = -INFINITY;
                for (int j = 0; j < n; j++) {
                    float sj = 0;
                    for (int c = 0; c < d; c++) sj += q[c] * kt[c * npad + j];
                    S[j] = sj * scale + (bt ? bt[j] : 0.0f);
                    mx = S[j] > mx ? S[j] : mx;
                }
                float sum = 0;
                for (int j = 0; j < n; j++) {
                    S[j] = expf(S[j] - mx);
                    sum += S[j];
                }
                float inv = 1.0f / sum;
                for (int c = 0; c < d; c++) {
                    float acc = 0;
                    for (int j = 0; j < n; j++) acc += S[j] * vh[(size_t)j * d + c];
                    o[c] = acc * inv;
                }
            }
        }
        if (proj_wp) { /* out[p] += Ob · Wᵀ + b for the window's real tokens */
            kn_linear_pk_fwd(Pb, C, Ob, C, proj_wp, proj_b, NULL, 0, nreal, C, C, KN_ACT_NONE);
            for (int g = 0; g < nreal; g++) {
                int t = real[g];
                float *o = out + ((size_t)(wy * ws + t / ws) * W + wx * ws + t % ws) * ldo;
                const float *pr = Pb + (size_t)g * C;
                for (int c = 0; c < C; c++) o[c] += pr[c];
            }
        }
    }
}

int kn_winattn_fwd(float *out, int ldo, const float *qkv, const float *padrow,
                   const float *bias, int H, int W, int heads, int d, int ws, float scale,
                   const float *proj_wp, const float *proj_b, float *scratch,
                   int scratch_threads)
{
    int n = ws * ws;
    if (ws < 1 || n > MAXN || d < 1 || heads < 1 || H < 1 || W < 1 || !scratch ||
        scratch_threads < 1)
        return -1;
    int nwy = (H + ws - 1) / ws, nwx = (W + ws - 1) / ws;
    win_job_t j = {.out = out, .scratch = scratch, .qkv = qkv, .padrow = padrow, .bias = bias,
                   .proj_wp = proj_wp, .proj_b = proj_b, .ldo = ldo, .H = H, .W = W,
                   .heads = heads, .d = d, .ws = ws, .nwx = nwx, .scale = scale,
                   .per = kn_winattn_scratch(heads, d, ws)};
    kn_parallel_for(nwy * nwx, scratch_threads, win_item, &j);
    return 0;
}
