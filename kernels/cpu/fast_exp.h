/* fast_exp.h — private to kernels/cpu: an exp for u ≤ 0 written so compilers vectorise it.
 *   u = k ln2 + r (k = round(u / ln2), ln2 split hi/lo), |r| ≤ ln2/2,
 *   e^r by its degree-6 Taylor polynomial (truncation < 1.3e-7 relative), times 2^k built in
 *   the exponent bits. u is clamped at −87 (e^u < 1.7e-38 there, and 2^k stays normal).
 * Relative error ≤ ~3e-7 on [−87, 0]; NaN in gives NaN out (the clamp keeps NaN).
 * kn_gelu1_fast: GELU 0.5 v (1 + erf(v/√2)) with erf from Abramowitz & Stegun 7.1.26
 * (|ε| ≤ 1.5e-7) and the exp above; absolute error ≤ 2e-7 · max(1, |v|). The one GELU of
 * kn_gelu_fast_fwd, kn_layernorm_gelu_fast_fwd and kn_gelu_linear_fwd; kn_gelu1_fast_grad is
 * its derivative (kn_layernorm_gelu_bwd). */
#ifndef MODA_KN_FAST_EXP_H
#define MODA_KN_FAST_EXP_H

#include <stdint.h>
#include <string.h>

static inline float kn_exp_nonpos(float u)
{
    u = u < -87.0f ? -87.0f : u;
    /* t = 1.5·2^23 + k: adding the magic constant rounds u/ln2 to the integer k, which then
     * sits in the low mantissa bits of t (unsigned arithmetic: no UB, NaN stays NaN) */
    float t = u * 1.44269504088896341f + 12582912.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    float kf = t - 12582912.0f;
    float r = u - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t sb = (tb - 0x4B400000u + 127u) << 23; /* 2^k */
    float s;
    memcpy(&s, &sb, sizeof s);
    return p * s;
}

static inline float kn_gelu1_fast(float v)
{
    float z = v * 0.70710678118654752f;
    float az = z < 0.0f ? -z : z;
    float t = 1.0f / (1.0f + 0.3275911f * az);
    float q = 1.061405429f;
    q = q * t - 1.453152027f;
    q = q * t + 1.421413741f;
    q = q * t - 0.284496736f;
    q = q * t + 0.254829592f;
    float e = 1.0f - q * t * kn_exp_nonpos(-az * az); /* erf(|z|) */
    return 0.5f * v * (1.0f + (z < 0.0f ? -e : e));
}

/* d gelu / dv = Φ(v) + v φ(v): the same erf as kn_gelu1_fast, and φ(v) = e^{-v²/2}/√(2π)
 * from the same exp (absolute error ≤ 3e-7 · max(1, v²)). */
static inline float kn_gelu1_fast_grad(float v)
{
    float z = v * 0.70710678118654752f;
    float az = z < 0.0f ? -z : z;
    float t = 1.0f / (1.0f + 0.3275911f * az);
    float q = 1.061405429f;
    q = q * t - 1.453152027f;
    q = q * t + 1.421413741f;
    q = q * t - 0.284496736f;
    q = q * t + 0.254829592f;
    float ex = kn_exp_nonpos(-az * az);
    float e = 1.0f - q * t * ex; /* erf(|z|) */
    return 0.5f * (1.0f + (z < 0.0f ? -e : e)) + v * 0.39894228040143268f * ex;
}

#endif
