/* points.cu — kcu_uncertain_points: detectron2's uncertainty-based point selection on the
 * device, picking exactly the points of the CPU reference kn_uncertain_points
 * (kernels/cpu/loss.c) for the same rng state.
 *
 * Host: every random number the CPU op draws (2·M candidate coordinates, M = P·oversample,
 * then 2·(P − n_imp) fresh ones; the selection itself draws none) is drawn here in the same
 * order from the host rng and uploaded once into the workspace.
 * Device: the candidates' logits are sampled by kcu_point_sample_fwd (bit-equal to the CPU:
 * elem.cu forms no FMA there); then one block of UT threads
 *   1. finds the n_imp-th largest uncertainty −|logit| exactly by a radix select over order
 *      keys (4 passes of 8 bits, a 256-bin shared histogram each);
 *   2. compacts, in candidate order, the candidates above that threshold plus the first
 *      `ties` candidates equal to it (lower index first), with block scans of the per-thread
 *      counts over contiguous chunks;
 *   3. appends the fresh points.
 * The order key of a sampled value v is the bit pattern of |v|: −|v| is never +0, so a
 * larger uncertainty is exactly a smaller key and equal uncertainties are exactly equal keys
 * (−0 included). A NaN maps to the key of +inf, i.e. uncertainty −inf, as on the CPU. */
#include "kcu_internal.cuh"

#include <limits.h>
#include <stdlib.h>

extern "C" {
#include "kn.h"
}

#define UT 256 /* threads of the selection block = histogram bins (8-bit digits) */

__device__ __forceinline__ unsigned unc_key(float v)
{
    unsigned k = __float_as_uint(v) & 0x7fffffffu;
    return k > 0x7f800000u ? 0x7f800000u : k; /* NaN → +inf */
}

/* Exclusive block prefix sum of v (one value per thread, UT threads); *total gets the sum.
 * sh: UT shared words. Every thread must call it (barriers). */
__device__ unsigned block_excl_scan(unsigned v, unsigned *sh, unsigned *total)
{
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int o = 1; o < UT; o <<= 1) {
        unsigned a = t >= o ? sh[t - o] : 0u;
        __syncthreads();
        sh[t] += a;
        __syncthreads();
    }
    unsigned incl = sh[t];
    *total = sh[UT - 1];
    __syncthreads(); /* sh is free again */
    return incl - v;
}

/* vals[M]: sampled logits; cand[2M], fresh[2(P − n_imp)]: uploaded coordinates.
 * pts[P, 2] = the n_imp most uncertain candidates in candidate order, then the fresh points. */
__global__ void __launch_bounds__(UT) k_uncertain_select(float *pts, const float *vals,
                                                         const float *cand, const float *fresh,
                                                         int M, int n_imp, int P)
{
    __shared__ unsigned hist[UT], scan[UT], pick[2];
    int t = threadIdx.x;
    unsigned tot;
    if (n_imp > 0) {
        /* radix select: the rank-th smallest key (1-based) among the keys under `prefix` */
        unsigned prefix = 0, rank = (unsigned)n_imp;
        for (int shift = 24; shift >= 0; shift -= 8) {
            unsigned hi = shift == 24 ? 0u : 0xffffffffu << (shift + 8);
            hist[t] = 0;
            __syncthreads();
            for (int i = t; i < M; i += UT) {
                unsigned k = unc_key(vals[i]);
                if ((k & hi) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            unsigned c = hist[t], before = block_excl_scan(c, scan, &tot);
            if (before < rank && rank <= before + c) {
                pick[0] = prefix | ((unsigned)t << shift);
                pick[1] = rank - before;
            }
            __syncthreads();
            prefix = pick[0];
            rank = pick[1];
            __syncthreads();
        }
        /* prefix = the threshold key; rank = how many candidates equal to it are taken (the
         * n_imp − rank others are strictly more uncertain) */
        unsigned thr = prefix, ties = rank;
        int chunk = (M + UT - 1) / UT, lo = t * chunk < M ? t * chunk : M;
        int hi_i = lo + chunk < M ? lo + chunk : M;
        unsigned nl = 0, ne = 0;
        for (int i = lo; i < hi_i; i++) {
            unsigned k = unc_key(vals[i]);
            nl += k < thr;
            ne += k == thr;
        }
        unsigned less = block_excl_scan(nl, scan, &tot), eq = block_excl_scan(ne, scan, &tot);
        /* taken before candidate i = (more uncertain before i) + min(equal before i, ties) */
        for (int i = lo; i < hi_i; i++) {
            unsigned k = unc_key(vals[i]), at;
            if (k < thr) {
                at = less + (eq < ties ? eq : ties);
                less++;
            } else if (k == thr) {
                at = less + eq;
                if (eq++ >= ties) continue;
            } else
                continue;
            pts[2 * at] = cand[2 * i];
            pts[2 * at + 1] = cand[2 * i + 1];
        }
    }
    for (int j = t; j < 2 * (P - n_imp); j += UT)
        pts[2 * n_imp + j] = fresh[j];
}

extern "C" int kcu_uncertain_points(kcu_ctx_t *ctx, float *pts, const float *logits, int H, int W,
                                    int P, int oversample, float importance, uint64_t *rng)
{
    KCU_ARG(ctx, pts && logits && rng && H >= 1 && W >= 1 && P >= 1 && oversample >= 1,
            "kcu_uncertain_points");
    KCU_ARG(ctx, importance >= 0.0f && importance <= 1.0f, "kcu_uncertain_points");
    KCU_ARG(ctx, (long long)P * oversample <= INT_MAX / 4, "kcu_uncertain_points");
    int M = P * oversample, n_imp = (int)(importance * (float)P), F = P - n_imp;
    size_t nr = 2 * (size_t)M + 2 * (size_t)F;
    float *ws = (float *)kcu_workspace(ctx, (nr + (size_t)M) * sizeof(float));
    if (!ws) return ctx->code;
    float *h = (float *)malloc(nr * sizeof(float));
    if (!h) return kcu_fail(ctx, ERR_NOMEM, "kcu_uncertain_points: %zu host floats", nr);
    uint64_t st = *rng; /* the caller's state advances only when the op is queued */
    for (size_t i = 0; i < nr; i++)
        h[i] = kn_rng_uniform(&st);
    int rc = kcu_upload(ctx, ws, h, nr * sizeof(float));
    free(h);
    if (rc) return rc;
    float *cand = ws, *fresh = ws + 2 * (size_t)M, *vals = ws + nr;
    if ((rc = kcu_point_sample_fwd(ctx, vals, logits, cand, 1, H, W, M))) return rc;
    k_uncertain_select<<<1, UT, 0, ctx->stream>>>(pts, vals, cand, fresh, M, n_imp, P);
    if ((rc = kcu_check_launch(ctx, "kcu_uncertain_points"))) return rc;
    *rng = st;
    return 0;
}
