/* bwd_attn.c — gradients of kn_attention_fwd (CPU reference).
 *
 * Per head h, with S = scale·q_h·k_hᵀ + bias_h and P = softmax(S) recomputed here:
 *   dv_h = Pᵀ·dout_h            dP = dout_h·v_hᵀ
 *   dS   = P ∘ (dP − rowsum(dP ∘ P))
 *   dq_h = scale·dS·k_h         dk_h = scale·dSᵀ·q_h
 * Scratch holds P and dP for one head (2·Nq·Nk floats). Every output element is written
 * by exactly one GEMM, so results are deterministic for a fixed BLAS thread count.
 */
#include "kn.h"

size_t kn_attention_bwd_scratch(int Nq, int Nk)
{
    return 2 * (size_t)Nq * Nk;
}

void kn_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, int ldq,
                      const float *k, int ldk, const float *v, int ldv, const float *bias,
                      int heads, int Nq, int Nk, int d, float scale, float *scratch)
{
    int C = heads * d;
    size_t NN = (size_t)Nq * Nk;
    float *P = scratch, *dP = scratch + NN;
    for (int h = 0; h < heads; h++) {
        const float *qh = q + h * d, *kh = k + h * d, *vh = v + h * d, *doh = dout + h * d;
        if (bias) {
            const float *bh = bias + (size_t)h * NN;
            for (size_t i = 0; i < NN; i++)
                P[i] = bh[i];
        }
        kn_gemm(0, 1, Nq, Nk, d, scale, qh, ldq, kh, ldk, bias ? 1.0f : 0.0f, P, Nk);
        kn_softmax_fwd(P, P, Nq, Nk);
        if (dv) kn_gemm(1, 0, Nk, d, Nq, 1.0f, P, Nk, doh, C, 0.0f, dv + h * d, ldv);
        if (!dq && !dk) continue;
        kn_gemm(0, 1, Nq, Nk, d, 1.0f, doh, C, vh, ldv, 0.0f, dP, Nk);
        kn_softmax_bwd(dP, dP, P, Nq, Nk); /* dP now holds dS */
        if (dq) kn_gemm(0, 0, Nq, d, Nk, scale, dP, Nk, kh, ldk, 0.0f, dq + h * d, ldq);
        if (dk) kn_gemm(1, 0, Nk, d, Nq, scale, dP, Nk, qh, ldq, 0.0f, dk + h * d, ldk);
    }
}
