/* gelu_fast.c — kn_gelu_fast_fwd: GELU (erf form) with an erf the compiler can vectorise
 * (CPU reference for the decoder's hot element-wise path; glibc erff is ~30 ns/element
 * here, this is ~1 ns).
 *
 *   gelu(x) = 0.5 x (1 + erf(x / √2))
 *   erf(z)  = sign(z) (1 − t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{−z²}),
 *             t = 1 / (1 + p |z|)          (Abramowitz & Stegun 7.1.26, |ε| ≤ 1.5e-7)
 *   e^{u}   for u ≤ 0; both in fast_exp.h (kn_gelu1_fast).
 * Absolute error of the result ≤ 2e-7 · max(1, |x|) (checked by tests/decoder unit tests
 * against double-precision erf). In place allowed. NaN in gives NaN out. */
#include "kn.h"

#include "fast_exp.h"

typedef struct {
    float *y;
    const float *x;
    size_t n;
} gf_job_t;

#define GF_BLK 32768

static void gf_item(void *ctx, int blk, int tid)
{
    (void)tid;
    const gf_job_t *j = ctx;
    size_t i0 = (size_t)blk * GF_BLK, i1 = i0 + GF_BLK < j->n ? i0 + GF_BLK : j->n;
    float *y = j->y;
    const float *x = j->x;
#pragma omp simd
    for (size_t i = i0; i < i1; i++) y[i] = kn_gelu1_fast(x[i]);
}

/* blocks on the kn_parallel_for pool (no OpenMP region: see transpose.c) */
void kn_gelu_fast_fwd(float *y, const float *x, size_t n)
{
    gf_job_t j = {y, x, n};
    if (n <= GF_BLK) gf_item(&j, 0, 0);
    else kn_parallel_for((int)((n + GF_BLK - 1) / GF_BLK), KN_POOL_ANY, gf_item, &j);
}
