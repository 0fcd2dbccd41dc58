/* relpos_attn.c — SAM ViT attention core with decomposed relative position (CPU).
 *
 * Pass 1 (per window×head group): pack scale·K_h and V_hᵀ for kn_linear_pk_fwd.
 * Pass 2, one task = (window, head, block of query rows): L = Q·(scale·K)ᵀ, the two
 * rel-pos projections Ph = Q·rel_hᵀ, Pw = Q·rel_wᵀ ([R, 2S−1], unscaled q), then per row
 * L[i, (jh,jw)] += Ph[i, ih−jh+S−1] + Pw[i, iw−jw+S−1] (with the row max), exp, and
 * out = exp(L)·V / Σ (the division is applied to the d outputs, not the N logits) — GEMMs
 * on the packed AVX-512 kernel, called single-threaded inside our OpenMP tasks (nested
 * regions are inactive). Each thread holds one R×N logits block (R ≤ KN_RELPOS_ROWS),
 * never a whole head. Deterministic: the result does not depend on the thread count.
 */
#include "kn.h"

#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static int rows_per_task(int N) { return N <= KN_RELPOS_ROWS ? N : KN_RELPOS_ROWS; }

/* Scratch layout (floats, every part a multiple of 16 so 64-byte alignment carries):
 * [packed rel_h][packed rel_w][groups × (packed K, packed Vᵀ)][threads × per-thread] where
 * per-thread = max(R×N + 2×R×T, N×d staging). */
static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

static size_t per_thread(int S, int d)
{
    size_t N = (size_t)S * S, R = (size_t)rows_per_task(S * S), T = 2 * (size_t)S - 1;
    size_t a = R * N + 2 * R * T + (size_t)S, b = N * (size_t)d;
    return up16(a > b ? a : b);
}

size_t kn_relpos_attention_scratch(int nwin, int S, int heads, int d, int threads)
{
    int N = S * S, T = 2 * S - 1;
    if (threads < 1) threads = 1;
    size_t grp = up16(kn_pack_size(N, d)) + up16(kn_pack_size(d, N));
    return 16 + 2 * up16(kn_pack_size(T, d)) + (size_t)nwin * heads * grp +
           (size_t)threads * per_thread(S, d);
}

/* e^x for x <= 0 (softmax after max subtraction); ~1 ulp on [-87, 0], 0 below. */
static inline float exp_neg(float x)
{
    if (x < -87.0f) return 0.0f;
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return ldexpf(p, (int)n);
}

#if defined(__AVX512F__)
static inline __m512 exp_neg16(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

/* In place: row[j] = exp(row[j] - mx); returns Σ (the caller divides later). */
static float exp_row(float *row, int N, float mx)
{
    float s = 0.0f;
    int j = 0;
#if defined(__AVX512F__)
    __m512 vm = _mm512_set1_ps(mx), vs = _mm512_setzero_ps();
    for (; j + 16 <= N; j += 16) {
        __m512 e = exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(row + j), vm));
        _mm512_storeu_ps(row + j, e);
        vs = _mm512_add_ps(vs, e);
    }
    s = _mm512_reduce_add_ps(vs);
#endif
    for (; j < N; j++) {
        row[j] = exp_neg(row[j] - mx);
        s += row[j];
    }
    return s;
}

void kn_relpos_attention_fwd(float *out, const float *qkv, const float *rel_h,
                             const float *rel_w, int nwin, int S, int heads, int d, float scale,
                             float *scratch, int threads)
{
    int N = S * S, R = rows_per_task(N), T = 2 * S - 1, C = heads * d;
    int nblk = (N + R - 1) / R, ngrp = nwin * heads;
    long ntask = (long)ngrp * nblk;
    if (threads < 1) threads = 1;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    size_t prel = up16(kn_pack_size(T, d)), pk = up16(kn_pack_size(N, d)), pv = up16(kn_pack_size(d, N));
    float *rh = base, *rw = rh + prel, *grp = rw + prel;
    float *thr = grp + (size_t)ngrp * (pk + pv);
    size_t per = per_thread(S, d);
    kn_pack_w(rh, rel_h, T, d);
    kn_pack_w(rw, rel_w, T, d);
#pragma omp parallel num_threads(threads)
    {
        float *mine = thr + (size_t)omp_get_thread_num() * per;
#pragma omp for schedule(static)
        for (int g = 0; g < ngrp; g++) {
            int h = g % heads, w = g / heads;
            const float *k = qkv + (size_t)w * N * 3 * C + C + h * d, *v = k + C;
            for (int j = 0; j < N; j++)
                for (int c = 0; c < d; c++) mine[(size_t)j * d + c] = k[(size_t)j * 3 * C + c] * scale;
            kn_pack_w(grp + (size_t)g * (pk + pv), mine, N, d);
            for (int c = 0; c < d; c++)
                for (int j = 0; j < N; j++) mine[(size_t)c * N + j] = v[(size_t)j * 3 * C + c];
            kn_pack_w(grp + (size_t)g * (pk + pv) + pk, mine, d, N);
        }
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < ntask; task++) {
            int blk = (int)(task % nblk), g = (int)(task / nblk);
            int h = g % heads, w = g / heads;
            int r0 = blk * R, nr = N - r0 < R ? N - r0 : R;
            float *L = mine, *Ph = L + (size_t)R * N, *Pw = Ph + (size_t)R * T, *pwr = Pw + (size_t)R * T;
            const float *q = qkv + ((size_t)w * N + r0) * 3 * C + h * d;
            const float *kp = grp + (size_t)g * (pk + pv), *vp = kp + pk;
            kn_linear_pk_fwd(L, N, q, 3 * C, kp, NULL, NULL, 0, nr, N, d, KN_ACT_NONE);
            kn_linear_pk_fwd(Ph, T, q, 3 * C, rh, NULL, NULL, 0, nr, T, d, KN_ACT_NONE);
            kn_linear_pk_fwd(Pw, T, q, 3 * C, rw, NULL, NULL, 0, nr, T, d, KN_ACT_NONE);
            float inv[KN_RELPOS_ROWS];
            for (int r = 0; r < nr; r++) {
                int i = r0 + r, ih = i / S, iw = i % S;
                float *row = L + (size_t)r * N;
                const float *ph = Ph + (size_t)r * T + ih + S - 1; /* ph[-jh] */
                const float *pw = Pw + (size_t)r * T + iw + S - 1; /* pw[-jw] */
                for (int jw = 0; jw < S; jw++) pwr[jw] = pw[-jw];
                float mx = -INFINITY;
                for (int jh = 0; jh < S; jh++) {
                    float bh = ph[-jh];
                    float *rr = row + (size_t)jh * S;
                    int jw = 0;
#if defined(__AVX512F__)
                    __m512 vb = _mm512_set1_ps(bh), vm = _mm512_set1_ps(-INFINITY);
                    for (; jw + 16 <= S; jw += 16) {
                        __m512 v = _mm512_add_ps(_mm512_loadu_ps(rr + jw), _mm512_add_ps(vb, _mm512_loadu_ps(pwr + jw)));
                        _mm512_storeu_ps(rr + jw, v);
                        vm = _mm512_max_ps(vm, v);
                    }
                    float m16 = _mm512_reduce_max_ps(vm);
                    mx = m16 > mx ? m16 : mx;
#endif
                    for (; jw < S; jw++) {
                        rr[jw] += bh + pwr[jw];
                        mx = rr[jw] > mx ? rr[jw] : mx;
                    }
                }
                inv[r] = 1.0f / exp_row(row, N, mx); /* softmax = exp / Σ, divided after P·V */
            }
            float *o = out + ((size_t)w * N + r0) * C + h * d;
            kn_linear_pk_fwd(o, C, L, N, vp, NULL, NULL, 0, nr, d, N, KN_ACT_NONE);
            for (int r = 0; r < nr; r++)
                for (int c = 0; c < d; c++) o[(size_t)r * C + c] *= inv[r];
        }
    }
}
