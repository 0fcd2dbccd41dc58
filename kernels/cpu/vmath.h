/* vmath.h — private vector math for the CPU kernels (not part of the kn.h API).
 *
 * exp and the exact (erf) GELU for one float and, when the compiler targets AVX-512F, for
 * 16 lanes. Accuracy: exp within ~2 ulp on [-87, 88]; the vector GELU's erf is within
 * 3e-7 absolute, so it differs from the scalar libm-erff form (used by non-AVX-512 builds)
 * by less than 2e-7·|x|.
 */
#ifndef MODA_KN_VMATH_H
#define MODA_KN_VMATH_H

#include <math.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define KN_HAVE_AVX512 1
#else
#define KN_HAVE_AVX512 0
#endif

static inline float kn_gelu1(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

#if KN_HAVE_AVX512
/* e^x for 16 lanes; x is clamped to [-87.3, 88.7] (no inf / denormal outputs). */
static inline __m512 kn_exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    /* Taylor to r^7 on |r| <= ln2/2: truncation < 6e-9 relative. */
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

/* 0.5 x (1 + erf(x / √2)) for 16 lanes. erf from Abramowitz & Stegun 7.1.28:
 * erf(z) = 1 - (1 + a1 z + ... + a6 z^6)^-16 for z >= 0, |error| <= 3e-7; no exp, no
 * divide (rcp14 + one Newton step), about 20 vector ops. */
static inline __m512 kn_gelu16(__m512 x)
{
    __m512 z = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    z = _mm512_min_ps(z, _mm512_set1_ps(6.0f)); /* erf(6) = 1 in float; keeps p^16 finite */
    __m512 p = _mm512_set1_ps(0.0000430638f);
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0002765672f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0001520143f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0092705272f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0422820123f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0705230784f));
    p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.0f));
    p = _mm512_mul_ps(p, p);
    p = _mm512_mul_ps(p, p);
    p = _mm512_mul_ps(p, p);
    p = _mm512_mul_ps(p, p); /* p^16 */
    __m512 q = _mm512_rcp14_ps(p);
    q = _mm512_mul_ps(q, _mm512_fnmadd_ps(p, q, _mm512_set1_ps(2.0f))); /* erfc(|z|) */
    /* 1 + erf(x/√2) = 2 - erfc(|z|) for x >= 0, erfc(|z|) for x < 0. */
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 onep = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), q), q);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), onep);
}
#endif

#endif
