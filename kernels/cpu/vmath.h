/* vmath.h — private vector math for the CPU kernels (not part of the kn.h API).
 *
 * exp and the exact (erf) GELU for one float and, when the compiler targets AVX-512F, for
 * 16 lanes. Accuracy: exp within ~2 ulp on [-87, 88]; erf within ~1.2e-7 absolute
 * (Numerical Recipes' erfc Chebyshev fit), so the vector GELU differs from the scalar
 * libm-erff form (used for tails and non-AVX-512 builds) by less than 1e-7·|x|.
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

/* erfc fit: for z >= 0, erfc(z) = t·exp(-z² + poly(t)), t = 1 / (1 + z/2). */
#define KN_ERFC_C0 -1.26551223f
#define KN_ERFC_C1 1.00002368f
#define KN_ERFC_C2 0.37409196f
#define KN_ERFC_C3 0.09678418f
#define KN_ERFC_C4 -0.18628806f
#define KN_ERFC_C5 0.27886807f
#define KN_ERFC_C6 -1.13520398f
#define KN_ERFC_C7 1.48851587f
#define KN_ERFC_C8 -0.82215223f
#define KN_ERFC_C9 0.17087277f

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

/* 0.5 x (1 + erf(x / √2)) for 16 lanes. */
static inline __m512 kn_gelu16(__m512 x)
{
    __m512 z = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(KN_ERFC_C9);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C8));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C7));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C6));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C5));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C4));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C3));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C2));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C1));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(KN_ERFC_C0));
    p = _mm512_fnmadd_ps(z, z, p);
    __m512 erfc = _mm512_mul_ps(t, kn_exp16(p));
    /* 1 + erf(x/√2) = 2 - erfc(|z|) for x >= 0, erfc(|z|) for x < 0. */
    __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 onep = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), erfc), erfc);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), onep);
}
#endif

#endif
