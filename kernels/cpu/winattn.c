/* winattn.c — TinyViT windowed multi-head attention on an image-ordered qkv map
 * (TinyViT / encoder).
 *
 * The map is split into ws×ws windows after padding bottom/right to a multiple of ws. A
 * pad position contributes the constant qkv row `padrow` (TinyViT pads before the
 * attention LayerNorm, so a pad token is qkv(LN bias), not zero) and is not masked as a
 * key; its own output is dropped, so only real query tokens are computed and written.
 * One OpenMP task per (window, head): keys transposed and values gathered into stack
 * buffers (n = ws² ≤ KN_WINATTN_MAXN), one query row at a time: logits vectorised over
 * keys, exact softmax, then P·V. Per-thread state lives on the stack (about 130 KB).
 */
#include "kn.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

#define MAXN KN_WINATTN_MAXN
#define MAXD 64

int kn_winattn_fwd(float *out, int ldo, const float *qkv, const float *padrow,
                   const float *bias, int H, int W, int heads, int d, int ws, float scale)
{
    int n = ws * ws;
    if (ws < 1 || n > MAXN || d < 1 || d > MAXD || heads < 1 || H < 1 || W < 1) return -1;
    int ld = 3 * heads * d;
    int nwy = (H + ws - 1) / ws, nwx = (W + ws - 1) / ws;
    int npad = (n + 15) & ~15;
    int ntask = nwy * nwx * heads;
#pragma omp parallel for schedule(dynamic, 4)
    for (int task = 0; task < ntask; task++) {
        int h = task % heads, wi = task / heads;
        int wy = wi / nwx, wx = wi % nwx;
        float Kt[MAXD * MAXN] __attribute__((aligned(64)));
        float V[MAXN * MAXD] __attribute__((aligned(64)));
        float S[MAXN] __attribute__((aligned(64)));
        const float *rows[MAXN];
        for (int t = 0; t < n; t++) {
            int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
            rows[t] = (iy < H && ix < W) ? qkv + ((size_t)iy * W + ix) * ld : padrow;
            const float *kr = rows[t] + h * 3 * d + d, *vr = kr + d;
            for (int c = 0; c < d; c++) Kt[c * npad + t] = kr[c];
            memcpy(V + (size_t)t * d, vr, sizeof(float) * d);
        }
        for (int c = 0; c < d; c++)
            for (int t = n; t < npad; t++) Kt[c * npad + t] = 0.0f;
        for (int t = 0; t < n; t++) {
            int iy = wy * ws + t / ws, ix = wx * ws + t % ws;
            if (iy >= H || ix >= W) continue;
            const float *q = rows[t] + h * 3 * d;
            const float *bt = bias ? bias + ((size_t)h * n + t) * n : NULL;
            float *o = out + ((size_t)iy * W + ix) * ldo + h * d;
#if KN_HAVE_AVX512
            __m512 vmax = _mm512_set1_ps(-INFINITY);
            for (int j0 = 0; j0 < npad; j0 += 64) {
                int nv = (npad - j0) / 16 < 4 ? (npad - j0) / 16 : 4;
                __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
                const float *kb = Kt + j0;
                for (int c = 0; c < d; c++) {
                    __m512 qc = _mm512_set1_ps(q[c]);
                    const float *kr = kb + (size_t)c * npad;
                    s0 = _mm512_fmadd_ps(qc, _mm512_load_ps(kr), s0);
                    if (nv > 1) s1 = _mm512_fmadd_ps(qc, _mm512_load_ps(kr + 16), s1);
                    if (nv > 2) s2 = _mm512_fmadd_ps(qc, _mm512_load_ps(kr + 32), s2);
                    if (nv > 3) s3 = _mm512_fmadd_ps(qc, _mm512_load_ps(kr + 48), s3);
                }
                __m512 sv[4] = {s0, s1, s2, s3};
                for (int v = 0; v < nv; v++) {
                    int j = j0 + 16 * v;
                    __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
                    __m512 l = _mm512_mul_ps(sv[v], _mm512_set1_ps(scale));
                    if (bt) l = _mm512_add_ps(l, _mm512_maskz_loadu_ps(m, bt + j));
                    l = _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), l);
                    _mm512_store_ps(S + j, l);
                    vmax = _mm512_max_ps(vmax, l);
                }
            }
            __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
            __m512 vsum = _mm512_setzero_ps();
            for (int j = 0; j < npad; j += 16) {
                __m512 e = kn_exp16(_mm512_sub_ps(_mm512_load_ps(S + j), mx));
                __mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
                e = _mm512_maskz_mov_ps(m, e);
                _mm512_store_ps(S + j, e);
                vsum = _mm512_add_ps(vsum, e);
            }
            float inv = 1.0f / _mm512_reduce_add_ps(vsum);
            if (d == 32) {
                __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
                int j = 0;
                for (; j + 1 < n; j += 2) {
                    __m512 p0 = _mm512_set1_ps(S[j]), p1 = _mm512_set1_ps(S[j + 1]);
                    o0 = _mm512_fmadd_ps(p0, _mm512_load_ps(V + (size_t)j * 32), o0);
                    o1 = _mm512_fmadd_ps(p0, _mm512_load_ps(V + (size_t)j * 32 + 16), o1);
                    o2 = _mm512_fmadd_ps(p1, _mm512_load_ps(V + (size_t)(j + 1) * 32), o2);
                    o3 = _mm512_fmadd_ps(p1, _mm512_load_ps(V + (size_t)(j + 1) * 32 + 16), o3);
                }
                if (j < n) {
                    __m512 p0 = _mm512_set1_ps(S[j]);
                    o0 = _mm512_fmadd_ps(p0, _mm512_load_ps(V + (size_t)j * 32), o0);
                    o1 = _mm512_fmadd_ps(p0, _mm512_load_ps(V + (size_t)j * 32 + 16), o1);
                }
                __m512 vi = _mm512_set1_ps(inv);
                _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_add_ps(o0, o2), vi));
                _mm512_storeu_ps(o + 16, _mm512_mul_ps(_mm512_add_ps(o1, o3), vi));
                continue;
            }
#else
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                float s = 0;
                for (int c = 0; c < d; c++) s += q[c] * Kt[c * npad + j];
                S[j] = s * scale + (bt ? bt[j] : 0.0f);
                mx = S[j] > mx ? S[j] : mx;
            }
            float sum = 0;
            for (int j = 0; j < n; j++) {
                S[j] = expf(S[j] - mx);
                sum += S[j];
            }
            float inv = 1.0f / sum;
#endif
            for (int c = 0; c < d; c++) {
                float acc = 0;
                for (int j = 0; j < n; j++) acc += S[j] * V[(size_t)j * d + c];
                o[c] = acc * inv;
            }
        }
    }
    return 0;
}
