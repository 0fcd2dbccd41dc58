/* relpos_attn.c — SAM ViT attention core with decomposed relative position (CPU).
 *
 * Pass 1 (per window×head group): pack scale·K_h and V_hᵀ for kn_linear_pk_fwd.
 * Pass 2, one task = (window, head, block of query rows): L = Q·(scale·K)ᵀ, the two
 * rel-pos projections Ph = Q·rel_hᵀ, Pw = Q·rel_wᵀ ([R, 2S−1], unscaled q), then per row
 * L[i, (jh,jw)] += Ph[i, ih−jh+S−1] + Pw[i, iw−jw+S−1] (with the row max), exp, and
 * out = exp(L)·V / Σ (the division is applied to the d outputs, not the N logits) — GEMMs
 * on the packed AVX-512 kernel, called single-threaded inside our tasks. Tasks go to the
 * kernels' thread pool (kn_parallel_for) when kn.h has it, else to OpenMP (nested regions
 * inactive). Each thread holds one R×N logits block (R ≤ KN_RELPOS_ROWS),
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

typedef struct job {
    float *out;
    const float *qkv, *rh, *rw; /* rh, rw: packed rel-pos tables */
    float *grp, *thr;           /* packed K / Vᵀ per group; per-thread scratch */
    size_t pk, pv, per;
    int N, R, T, C, S, d, heads, nblk;
    float scale;
} job_t;

/* Group g = window × head: pack scale·K_h ([N, d] as a weight of N outputs) and V_hᵀ. */
static void pack_item(void *ctx, int g, int tid)
{
    const job_t *j = ctx;
    int N = j->N, C = j->C, d = j->d, h = g % j->heads, w = g / j->heads;
    float *mine = j->thr + (size_t)tid * j->per;
    const float *k = j->qkv + (size_t)w * N * 3 * C + C + h * d, *v = k + C;
    for (int t = 0; t < N; t++)
        for (int c = 0; c < d; c++) mine[(size_t)t * d + c] = k[(size_t)t * 3 * C + c] * j->scale;
    kn_pack_w(j->grp + (size_t)g * (j->pk + j->pv), mine, N, d);
    for (int c = 0; c < d; c++)
        for (int t = 0; t < N; t++) mine[(size_t)c * N + t] = v[(size_t)t * 3 * C + c];
    kn_pack_w(j->grp + (size_t)g * (j->pk + j->pv) + j->pk, mine, d, N);
}

/* Task = (group, block of query rows). */
static void attn_item(void *ctx, int task, int tid)
{
    const job_t *j = ctx;
    int N = j->N, R = j->R, T = j->T, C = j->C, S = j->S, d = j->d;
    int blk = task % j->nblk, g = task / j->nblk;
    int h = g % j->heads, w = g / j->heads;
    int r0 = blk * R, nr = N - r0 < R ? N - r0 : R;
    float *L = j->thr + (size_t)tid * j->per, *Ph = L + (size_t)R * N, *Pw = Ph + (size_t)R * T;
    float *pwr = Pw + (size_t)R * T;
    const float *q = j->qkv + ((size_t)w * N + r0) * 3 * C + h * d;
    const float *kp = j->grp + (size_t)g * (j->pk + j->pv), *vp = kp + j->pk;
    kn_linear_pk_fwd(L, N, q, 3 * C, kp, NULL, NULL, 0, nr, N, d, KN_ACT_NONE);
    kn_linear_pk_fwd(Ph, T, q, 3 * C, j->rh, NULL, NULL, 0, nr, T, d, KN_ACT_NONE);
    kn_linear_pk_fwd(Pw, T, q, 3 * C, j->rw, NULL, NULL, 0, nr, T, d, KN_ACT_NONE);
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
    float *o = j->out + ((size_t)w * N + r0) * C + h * d;
    kn_linear_pk_fwd(o, C, L, N, vp, NULL, NULL, 0, nr, d, N, KN_ACT_NONE);
    for (int r = 0; r < nr; r++)
        for (int c = 0; c < d; c++) o[(size_t)r * C + c] *= inv[r];
}

void kn_relpos_attention_fwd(float *out, const float *qkv, const float *rel_h,
                             const float *rel_w, int nwin, int S, int heads, int d, float scale,
                             float *scratch, int threads)
{
    job_t j = {.out = out, .qkv = qkv, .N = S * S, .T = 2 * S - 1, .C = heads * d, .S = S,
               .d = d, .heads = heads, .scale = scale};
    j.R = rows_per_task(j.N);
    j.nblk = (j.N + j.R - 1) / j.R;
    int ngrp = nwin * heads, ntask = ngrp * j.nblk;
    if (threads < 1) threads = 1;
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    size_t prel = up16(kn_pack_size(j.T, d));
    j.pk = up16(kn_pack_size(j.N, d));
    j.pv = up16(kn_pack_size(d, j.N));
    j.per = per_thread(S, d);
    float *rh = base, *rw = rh + prel;
    j.rh = rh;
    j.rw = rw;
    j.grp = rw + prel;
    j.thr = j.grp + (size_t)ngrp * (j.pk + j.pv);
    kn_pack_w(rh, rel_h, j.T, d);
    kn_pack_w(rw, rel_w, j.T, d);
#ifdef KN_POOL_ANY
    /* the kernels' thread pool: the packed GEMMs inside an item then run serially */
    kn_parallel_for(ngrp, threads, pack_item, &j);
    kn_parallel_for(ntask, threads, attn_item, &j);
#else
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int g = 0; g < ngrp; g++) pack_item(&j, g, omp_get_thread_num());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int t = 0; t < ntask; t++) attn_item(&j, t, omp_get_thread_num());
#endif
}
