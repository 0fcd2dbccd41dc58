/* relpos_attn.c — SAM ViT attention core with decomposed relative position (CPU).
 *
 * One task = (window, head, block of query rows). Per task: L = scale·Q·Kᵀ by GEMM, the
 * two rel-pos projections Ph = Q·rel_hᵀ, Pw = Q·rel_wᵀ ([R, 2S−1], unscaled q) by GEMM,
 * then per row L[i, (jh,jw)] += Ph[i, ih−jh+S−1] + Pw[i, iw−jw+S−1], softmax and out = P·V
 * by GEMM. Tasks run on OpenMP threads with single-threaded BLAS calls; each thread holds
 * one R×N logits block (R ≤ KN_RELPOS_ROWS), never a whole head. Deterministic: the result
 * does not depend on the thread count.
 */
#include "kn.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

static int rows_per_task(int N) { return N <= KN_RELPOS_ROWS ? N : KN_RELPOS_ROWS; }

size_t kn_relpos_attention_scratch(int S, int threads)
{
    int N = S * S, R = rows_per_task(N);
    if (threads < 1) threads = 1;
    return (size_t)threads * ((size_t)R * N + 2 * (size_t)R * (2 * S - 1));
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

/* In place: row[j] = exp(row[j] - max) / Σ. */
static void softmax_row(float *row, int N)
{
    float mx = -INFINITY;
    for (int j = 0; j < N; j++) mx = row[j] > mx ? row[j] : mx;
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
    float inv = 1.0f / s;
    for (j = 0; j < N; j++) row[j] *= inv;
}

void kn_relpos_attention_fwd(float *out, const float *qkv, const float *rel_h,
                             const float *rel_w, int nwin, int S, int heads, int d, float scale,
                             float *scratch)
{
    int N = S * S, R = rows_per_task(N), T = 2 * S - 1, C = heads * d;
    int nblk = (N + R - 1) / R;
    long ntask = (long)nwin * heads * nblk;
    size_t per = (size_t)R * N + 2 * (size_t)R * T;
    int nth = kn_get_threads();
    int blas_threads = openblas_get_num_threads();
    if (nth > 1) openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (long task = 0; task < ntask; task++) {
        int blk = (int)(task % nblk), h = (int)(task / nblk % heads), w = (int)(task / nblk / heads);
        int r0 = blk * R, nr = N - r0 < R ? N - r0 : R;
        float *L = scratch + (size_t)omp_get_thread_num() * per;
        float *Ph = L + (size_t)R * N, *Pw = Ph + (size_t)R * T;
        const float *base = qkv + (size_t)w * N * 3 * C;
        const float *q = base + (size_t)r0 * 3 * C + h * d, *k = base + C + h * d,
                    *v = base + 2 * C + h * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, N, d, scale, q, 3 * C, k,
                    3 * C, 0.0f, L, N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, T, d, 1.0f, q, 3 * C, rel_h, d,
                    0.0f, Ph, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, T, d, 1.0f, q, 3 * C, rel_w, d,
                    0.0f, Pw, T);
        for (int r = 0; r < nr; r++) {
            int i = r0 + r, ih = i / S, iw = i % S;
            float *row = L + (size_t)r * N;
            const float *ph = Ph + (size_t)r * T + ih + S - 1; /* ph[-jh] */
            const float *pw = Pw + (size_t)r * T + iw + S - 1; /* pw[-jw] */
            for (int jh = 0; jh < S; jh++) {
                float bh = ph[-jh];
                float *rr = row + (size_t)jh * S;
                for (int jw = 0; jw < S; jw++) rr[jw] += bh + pw[-jw];
            }
            softmax_row(row, N);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, N, 1.0f, L, N, v, 3 * C,
                    0.0f, out + ((size_t)w * N + r0) * C + h * d, C);
    }
    if (nth > 1) openblas_set_num_threads(blas_threads);
}
