/* attn.c — multi-head attention (CPU reference): per head, logits by GEMM, row softmax,
 * then GEMM with v. Materialises one head's Nq×Nk logits in scratch at a time. */
#include "kn.h"

void kn_attention_fwd(float *out, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, const float *bias, int heads, int Nq, int Nk,
                      int d, float scale, float *scratch)
{
    int C = heads * d;
    for (int h = 0; h < heads; h++) {
        float *S = scratch;
        if (bias) {
            const float *bh = bias + (size_t)h * Nq * Nk;
            for (size_t i = 0; i < (size_t)Nq * Nk; i++) S[i] = bh[i];
        }
        kn_gemm(0, 1, Nq, Nk, d, scale, q + h * d, ldq, k + h * d, ldk, bias ? 1.0f : 0.0f, S,
                Nk);
        kn_softmax_fwd(S, S, Nq, Nk);
        kn_gemm(0, 0, Nq, d, Nk, 1.0f, S, Nk, v + h * d, ldv, 0.0f, out + h * d, C);
    }
}
