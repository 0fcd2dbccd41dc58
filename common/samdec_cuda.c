/* samdec_cuda.c — SAM prompt encoder + two-way mask decoder + IoU head on the GPU from kcu_
 * ops (samdec_cuda.h). The layer order and every constant follow sam_decoder.c
 * (samdec_forward_ex, the CPU reference); the prompt's sparse tokens and the dense positional
 * encoding are the same host math (samdec_prompt_tokens, samdec_dense_pe in sam_parts.h),
 * uploaded.
 *
 * Layout: token side [nq, 256] rows (iou token, 4 mask tokens, the n prompt points, then the
 * hq token when given: nq = 5 + n + H), image side token-major [4096, 256] (row y*64 + x).
 * Unlike the CPU decoder nothing is re-associated (the GPU has the FLOPs): every attention
 * projects both sides.
 *   - token self-attention and image→token attention: kcu_attention_fwd (one-way rows: the
 *     hq row is a query only, its keys/values are the nt = 5 + n SAM rows);
 *   - token→image attention (8 heads of 16 over 4096 keys): logits by one batched GEMM,
 *     a row softmax, P·V by a second batched GEMM (the probabilities stay for the hq
 *     backward);
 *   - upscaling: transpose to [256, 64, 64], two kcu_convt2x2_fwd with LayerNorm2d + GELU
 *     between and GELU after (that [32, 256, 256] map is extra->up), then the 4 hypernetwork
 *     vectors times it as one GEMM.
 * Every intermediate the hq token's backward reads (q rows, LayerNorm inputs and statistics,
 * the MLP hidden rows, the projected image keys/values and the softmax rows of the three
 * token→image attentions, the self-attention keys/values) has its own buffer, so a traced
 * forward only marks the state valid; samdec_cuda_hq_backward is samdec_hq_backward's algebra
 * on those buffers, one row.
 *
 * Precision: all GEMMs and convolutions run in plain fp32 whatever the context's TF32 setting
 * (restored on return): the decoder is a few GFLOP, and the mask logits then match the CPU
 * decoder to float rounding rather than to TF32's 1e-3.
 *
 * Device arena: 71 MB measured (weights 16 MB, activations for SAMDEC_CUDA_MAX_PTS points).
 */
#include "samdec_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(MODA_HAVE_CUDA)

#define NP (SAM_EMB * SAM_EMB) /* 4096 image tokens */
#define C SAM_EMB_C            /* 256 */
#define HEADS 8
#define XDIM 128 /* cross-attention width */
#define XD 16    /* per head */
#define SD 32    /* self-attention per head */
#define MLP_DIM 2048
#define HYP 32
#define MAXQ (5 + SAMDEC_CUDA_MAX_PTS + 1) /* token rows incl. the hq token */
#define LR_N ((size_t)SAM_LOWRES * SAM_LOWRES)
#define LN_EPS 1e-5f
#define LN2D_EPS 1e-6f

typedef struct { const float *qw, *qb, *kw, *kb, *vw, *vb, *ow, *ob; } dattn_t;
typedef struct { const float *w, *b; } dln_t;
typedef struct { const float *w[3], *b[3]; } dmlp3_t;

typedef struct { /* one token→image attention's activations */
    float *q;   /* [MAXQ, 128] query projection */
    float *K, *V; /* [4096, 128] image keys (from kp) and values (from keys) */
    float *P;   /* [8, nq, 4096] softmax rows */
    float *att; /* [MAXQ, 128] attention output before out_proj */
} dt2i_t;

typedef struct {
    dattn_t self, t2i, i2t;
    dln_t n1, n2, n3, n4;
    const float *l1w, *l1b, *l2w, *l2b;
} dlayer_t;

typedef struct { /* the per-layer token-side activations (kept for the hq backward) */
    float *sq, *sk, *sv, *satt;     /* self-attention q, k, v projections, output [MAXQ, 256] */
    float *sa_pre, *ca_pre, *mlp_pre; /* norm1/2/3 inputs [MAXQ, 256] */
    float *x2;                      /* norm2 output = MLP input */
    float *h;                       /* [MAXQ, 2048] MLP hidden after ReLU */
    float *st;                      /* LayerNorm statistics: 3 norms × (mean, rstd) × MAXQ */
    dt2i_t ca;
} dlact_t;

struct samdec_cuda {
    kcu_ctx_t *ctx; /* borrowed */
    /* host: prompt-encoder constants (copied at new) */
    float *hbuf;
    samdec_prompt_w_t pw;
    float *tok_h; /* [MAXQ, 256] staging for the token upload */
    /* device weights */
    dlayer_t L[2];
    dattn_t fin;
    dln_t nfin;
    const float *no_mask, *md0w, *md0b, *md1w, *md1b, *md3w, *md3b, *md4w, *md4b, *md6w, *md6b;
    const float *up0w, *up0b, *up1w, *up1b, *up3w, *up3b;
    dmlp3_t hyper[SAM_NMASK], iouh;
    const float *pe, *ones; /* [4096, 256] dense PE; [4096] ones */
    /* device activations */
    float *t0, *Q, *tmp;            /* [MAXQ, 256] */
    dlact_t A[2];
    dt2i_t fa;                      /* final attention */
    float *fin_pre, *fin_st;        /* norm_final_attn input, its statistics */
    float *ikt, *ivt;               /* [MAXQ, 128] image→token k, v */
    float *iq, *iatt;               /* [4096, 128] image→token q, attention output */
    float *keys, *kp;               /* [4096, 256] */
    float *big;                     /* [256, 4096]: dense prompt, then keys channel-major */
    float *m1, *m2;                 /* mask path [4, 128, 128], [16, 64, 64] */
    float *y1;                      /* [64, 128, 128] */
    float *up;                      /* [32, 256, 256] when the caller gives none */
    float *hh, *hyp;                /* heads: [2, 256] hidden, [4, 32] hypernetwork vectors */
    float *bw;                      /* backward scratch */
    float *lr_d, *iou_d, *mask_d;   /* samdec_cuda_predict's own outputs and mask prompt */
    int trace_valid, trace_nt;
};

/* ---- weights ------------------------------------------------------------------------- */

/* <name> uploaded, or NULL + err (missing / misshapen tensor: ERR_FORMAT named by wts_f32) */
static const float *up(samdec_cuda_t *d, const wts_t *w, err_t *err, const char *name, int ndim,
                       int d0, int d1, int d2, int d3)
{
    const float *h;
    size_t n = (size_t)d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1) * (ndim > 3 ? d3 : 1);
    switch (ndim) {
    case 1: h = wts_f32(w, name, err, 1, d0); break;
    case 2: h = wts_f32(w, name, err, 2, d0, d1); break;
    default: h = wts_f32(w, name, err, 4, d0, d1, d2, d3); break;
    }
    if (!h) return NULL;
    float *p = kcu_upload_new(d->ctx, h, n);
    if (!p) err_set(err, ERR_NOMEM, "samdec_cuda: uploading %s: %s", name, kcu_errmsg(d->ctx));
    return p;
}

#define UP(dst, ...)                                                                              \
    do {                                                                                          \
        if (!((dst) = up(d, w, err, __VA_ARGS__))) return err->code;                             \
    } while (0)

static int load_attn(samdec_cuda_t *d, const wts_t *w, err_t *err, dattn_t *a, const char *pfx,
                     int inner)
{
    char n[256];
#define A_(field, suf, ...) \
    do { snprintf(n, sizeof n, "%s.%s", pfx, suf); UP(a->field, n, __VA_ARGS__); } while (0)
    A_(qw, "q_proj.weight", 2, inner, C, 0, 0);
    A_(qb, "q_proj.bias", 1, inner, 0, 0, 0);
    A_(kw, "k_proj.weight", 2, inner, C, 0, 0);
    A_(kb, "k_proj.bias", 1, inner, 0, 0, 0);
    A_(vw, "v_proj.weight", 2, inner, C, 0, 0);
    A_(vb, "v_proj.bias", 1, inner, 0, 0, 0);
    A_(ow, "out_proj.weight", 2, C, inner, 0, 0);
    A_(ob, "out_proj.bias", 1, C, 0, 0, 0);
#undef A_
    return 0;
}

static int load_ln(samdec_cuda_t *d, const wts_t *w, err_t *err, dln_t *l, const char *pfx, int n)
{
    char s[256];
    snprintf(s, sizeof s, "%s.weight", pfx);
    UP(l->w, s, 1, n, 0, 0, 0);
    snprintf(s, sizeof s, "%s.bias", pfx);
    UP(l->b, s, 1, n, 0, 0, 0);
    return 0;
}

static int load_mlp3(samdec_cuda_t *d, const wts_t *w, err_t *err, dmlp3_t *m, const char *pfx,
                     int out)
{
    char s[256];
    for (int i = 0; i < 3; i++) {
        int o = i == 2 ? out : C;
        snprintf(s, sizeof s, "%s.layers.%d.weight", pfx, i);
        UP(m->w[i], s, 2, o, C, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.bias", pfx, i);
        UP(m->b[i], s, 1, o, 0, 0, 0);
    }
    return 0;
}

static int load_all(samdec_cuda_t *d, const wts_t *w, err_t *err)
{
    const char *tr = "mask_decoder.transformer";
    char s[256];
    for (int l = 0; l < 2; l++) {
        dlayer_t *L = &d->L[l];
        snprintf(s, sizeof s, "%s.layers.%d.self_attn", tr, l);
        if (load_attn(d, w, err, &L->self, s, C)) return err->code;
        snprintf(s, sizeof s, "%s.layers.%d.cross_attn_token_to_image", tr, l);
        if (load_attn(d, w, err, &L->t2i, s, XDIM)) return err->code;
        snprintf(s, sizeof s, "%s.layers.%d.cross_attn_image_to_token", tr, l);
        if (load_attn(d, w, err, &L->i2t, s, XDIM)) return err->code;
        dln_t *ns[4] = {&L->n1, &L->n2, &L->n3, &L->n4};
        for (int k = 0; k < 4; k++) {
            snprintf(s, sizeof s, "%s.layers.%d.norm%d", tr, l, k + 1);
            if (load_ln(d, w, err, ns[k], s, C)) return err->code;
        }
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin1.weight", tr, l);
        UP(L->l1w, s, 2, MLP_DIM, C, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin1.bias", tr, l);
        UP(L->l1b, s, 1, MLP_DIM, 0, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin2.weight", tr, l);
        UP(L->l2w, s, 2, C, MLP_DIM, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin2.bias", tr, l);
        UP(L->l2b, s, 1, C, 0, 0, 0);
    }
    snprintf(s, sizeof s, "%s.final_attn_token_to_image", tr);
    if (load_attn(d, w, err, &d->fin, s, XDIM)) return err->code;
    snprintf(s, sizeof s, "%s.norm_final_attn", tr);
    if (load_ln(d, w, err, &d->nfin, s, C)) return err->code;
    UP(d->up0w, "mask_decoder.output_upscaling.0.weight", 4, C, 64, 2, 2);
    UP(d->up0b, "mask_decoder.output_upscaling.0.bias", 1, 64, 0, 0, 0);
    UP(d->up1w, "mask_decoder.output_upscaling.1.weight", 1, 64, 0, 0, 0);
    UP(d->up1b, "mask_decoder.output_upscaling.1.bias", 1, 64, 0, 0, 0);
    UP(d->up3w, "mask_decoder.output_upscaling.3.weight", 4, 64, HYP, 2, 2);
    UP(d->up3b, "mask_decoder.output_upscaling.3.bias", 1, HYP, 0, 0, 0);
    for (int i = 0; i < SAM_NMASK; i++) {
        snprintf(s, sizeof s, "mask_decoder.output_hypernetworks_mlps.%d", i);
        if (load_mlp3(d, w, err, &d->hyper[i], s, HYP)) return err->code;
    }
    if (load_mlp3(d, w, err, &d->iouh, "mask_decoder.iou_prediction_head", SAM_NMASK))
        return err->code;
    UP(d->no_mask, "prompt_encoder.no_mask_embed.weight", 2, 1, C, 0, 0);
    UP(d->md0w, "prompt_encoder.mask_downscaling.0.weight", 4, 4, 1, 2, 2);
    UP(d->md0b, "prompt_encoder.mask_downscaling.0.bias", 1, 4, 0, 0, 0);
    UP(d->md1w, "prompt_encoder.mask_downscaling.1.weight", 1, 4, 0, 0, 0);
    UP(d->md1b, "prompt_encoder.mask_downscaling.1.bias", 1, 4, 0, 0, 0);
    UP(d->md3w, "prompt_encoder.mask_downscaling.3.weight", 4, 16, 4, 2, 2);
    UP(d->md3b, "prompt_encoder.mask_downscaling.3.bias", 1, 16, 0, 0, 0);
    UP(d->md4w, "prompt_encoder.mask_downscaling.4.weight", 1, 16, 0, 0, 0);
    UP(d->md4b, "prompt_encoder.mask_downscaling.4.bias", 1, 16, 0, 0, 0);
    UP(d->md6w, "prompt_encoder.mask_downscaling.6.weight", 4, C, 16, 1, 1);
    UP(d->md6b, "prompt_encoder.mask_downscaling.6.bias", 1, C, 0, 0, 0);
    return 0;
}

/* host copies of the prompt encoder's constants (w is only borrowed during new) and the
 * uploaded dense PE and ones */
static int load_host(samdec_cuda_t *d, const wts_t *w, err_t *err)
{
    samdec_prompt_w_t p;
    int rc = samdec_prompt_w_load(&p, w, err);
    if (rc < 0) return rc;
    size_t nh = 2 * (C / 2) + 4 * C + C + C + SAM_NMASK * C;
    d->hbuf = malloc(sizeof(float) * (nh + (size_t)MAXQ * C));
    float *pe = malloc(sizeof(float) * (size_t)NP * C);
    if (!d->hbuf || !pe) {
        free(pe);
        return err_set(err, ERR_NOMEM, "samdec_cuda: out of host memory");
    }
    float *o = d->hbuf;
#define CP(dst, src, n) (memcpy(o, src, sizeof(float) * (n)), (dst) = o, o += (n))
    CP(d->pw.pe_g, p.pe_g, C);
    for (int i = 0; i < 4; i++) CP(d->pw.pt_emb[i], p.pt_emb[i], C);
    CP(d->pw.not_a_point, p.not_a_point, C);
    CP(d->pw.iou_tok, p.iou_tok, C);
    CP(d->pw.mask_toks, p.mask_toks, SAM_NMASK * C);
#undef CP
    d->tok_h = o;
    samdec_dense_pe(d->pw.pe_g, pe);
    d->pe = kcu_upload_new(d->ctx, pe, (size_t)NP * C);
    for (int i = 0; i < NP; i++) pe[i] = 1.0f;
    d->ones = d->pe ? kcu_upload_new(d->ctx, pe, NP) : NULL;
    free(pe);
    if (!d->ones) return err_set(err, ERR_NOMEM, "samdec_cuda: %s", kcu_errmsg(d->ctx));
    return 0;
}

static int alloc_t2i(kcu_ctx_t *c, dt2i_t *a)
{
    a->q = kcu_allocf(c, (size_t)MAXQ * XDIM);
    a->K = kcu_allocf(c, (size_t)NP * XDIM);
    a->V = kcu_allocf(c, (size_t)NP * XDIM);
    a->P = kcu_allocf(c, (size_t)HEADS * MAXQ * NP);
    a->att = kcu_allocf(c, (size_t)MAXQ * XDIM);
    return a->q && a->K && a->V && a->P && a->att;
}

static int alloc_act(samdec_cuda_t *d)
{
    kcu_ctx_t *c = d->ctx;
    size_t tq = (size_t)MAXQ * C;
    int ok = (d->t0 = kcu_allocf(c, tq)) && (d->Q = kcu_allocf(c, tq)) &&
             (d->tmp = kcu_allocf(c, tq));
    for (int l = 0; l < 2 && ok; l++) {
        dlact_t *a = &d->A[l];
        ok = (a->sq = kcu_allocf(c, tq)) && (a->sk = kcu_allocf(c, tq)) &&
             (a->sv = kcu_allocf(c, tq)) && (a->satt = kcu_allocf(c, tq)) &&
             (a->sa_pre = kcu_allocf(c, tq)) && (a->ca_pre = kcu_allocf(c, tq)) &&
             (a->mlp_pre = kcu_allocf(c, tq)) && (a->x2 = kcu_allocf(c, tq)) &&
             (a->h = kcu_allocf(c, (size_t)MAXQ * MLP_DIM)) &&
             (a->st = kcu_allocf(c, 6 * (size_t)MAXQ)) && alloc_t2i(c, &a->ca);
    }
    return ok && alloc_t2i(c, &d->fa) && (d->fin_pre = kcu_allocf(c, tq)) &&
           (d->fin_st = kcu_allocf(c, 2 * (size_t)MAXQ)) &&
           (d->ikt = kcu_allocf(c, (size_t)MAXQ * XDIM)) &&
           (d->ivt = kcu_allocf(c, (size_t)MAXQ * XDIM)) &&
           (d->iq = kcu_allocf(c, (size_t)NP * XDIM)) &&
           (d->iatt = kcu_allocf(c, (size_t)NP * XDIM)) &&
           (d->keys = kcu_allocf(c, (size_t)NP * C)) && (d->kp = kcu_allocf(c, (size_t)NP * C)) &&
           (d->big = kcu_allocf(c, (size_t)NP * C)) &&
           (d->m1 = kcu_allocf(c, (size_t)4 * 128 * 128)) &&
           (d->m2 = kcu_allocf(c, (size_t)16 * NP)) &&
           (d->y1 = kcu_allocf(c, (size_t)64 * 128 * 128)) &&
           (d->up = kcu_allocf(c, (size_t)HYP * LR_N)) && (d->hh = kcu_allocf(c, 2 * C)) &&
           (d->hyp = kcu_allocf(c, SAM_NMASK * HYP)) &&
           (d->bw = kcu_allocf(c, 4 * (size_t)HEADS * NP + 16 * (size_t)C + MLP_DIM)) &&
           (d->lr_d = kcu_allocf(c, SAM_NMASK * LR_N)) &&
           (d->iou_d = kcu_allocf(c, SAM_NMASK)) && (d->mask_d = kcu_allocf(c, LR_N));
}

samdec_cuda_t *samdec_cuda_new(const wts_t *w, kcu_ctx_t *ctx, err_t *err)
{
    if (!w || !ctx) {
        err_set(err, ERR_INVALID, "samdec_cuda_new: weights or context is NULL");
        return NULL;
    }
    samdec_cuda_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(err, ERR_NOMEM, "samdec_cuda: out of memory");
        return NULL;
    }
    d->ctx = ctx;
    int rc = load_all(d, w, err);
    if (!rc) rc = load_host(d, w, err);
    if (!rc && !alloc_act(d))
        rc = err_set(err, ERR_NOMEM, "samdec_cuda: activations: %s", kcu_errmsg(ctx));
    if (!rc) {
        err_t se = {0};
        if (kcu_sync(ctx, &se)) rc = err_set(err, se.code, "samdec_cuda: %s", se.msg);
    }
    if (rc) {
        err_wrap(err, "samdec_cuda_new");
        samdec_cuda_destroy(&d);
    }
    return d;
}

void samdec_cuda_destroy(samdec_cuda_t **pd)
{
    if (!pd || !*pd) return;
    free((*pd)->hbuf); /* device memory stays in the borrowed arena (the caller resets it) */
    free(*pd);
    *pd = NULL;
}

/* ---- forward pieces (rc chains: each returns 0 or the first failure) ------------------------ */

/* rows n of [n, 256]: y = x + a */
static int add_rows(kcu_ctx_t *c, float *y, const float *x, const float *a, int n)
{
    return kcu_add(c, y, x, a, (size_t)n * C);
}

/* Token self-attention (8 heads of 32): q from qin[nq], k from qin[:nk], v from vin[:nk];
 * out = residual (may be NULL) + Attn · Woᵀ + bo, into a->sa_pre. */
static int self_attn(samdec_cuda_t *d, const dattn_t *w, dlact_t *a, const float *qin,
                     const float *vin, const float *res, int nq, int nk)
{
    kcu_ctx_t *c = d->ctx;
    int rc = kcu_linear_fwd(c, a->sq, qin, w->qw, w->qb, nq, C, C);
    if (!rc) rc = kcu_linear_fwd(c, a->sk, qin, w->kw, w->kb, nk, C, C);
    if (!rc) rc = kcu_linear_fwd(c, a->sv, vin, w->vw, w->vb, nk, C, C);
    if (!rc) rc = kcu_attention_fwd(c, a->satt, a->sq, C, a->sk, C, a->sv, C, NULL, HEADS, nq, nk,
                                    SD, 1.0f / sqrtf((float)SD));
    if (!rc) rc = kcu_linear_ex(c, a->sa_pre, C, a->satt, C, w->ow, w->ob, res, C, nq, C, C,
                                KCU_ACT_NONE);
    return rc;
}

/* Token→image attention: qin[nq] queries, kpin (image + pe) keys, img values;
 * out = res + Attn · Woᵀ + bo. */
static int t2i(samdec_cuda_t *d, const dattn_t *w, dt2i_t *a, const float *qin, const float *kpin,
               const float *img, const float *res, float *out, int nq)
{
    kcu_ctx_t *c = d->ctx;
    long long pstride = (long long)nq * NP;
    int rc = kcu_linear_fwd(c, a->q, qin, w->qw, w->qb, nq, C, XDIM);
    if (!rc) rc = kcu_linear_fwd(c, a->K, kpin, w->kw, w->kb, NP, C, XDIM);
    if (!rc) rc = kcu_linear_fwd(c, a->V, img, w->vw, w->vb, NP, C, XDIM);
    /* P_h[nq, 4096] = s q_h K_hᵀ, heads batched */
    if (!rc) rc = kcu_gemm_batched(c, 0, 1, nq, NP, XD, 0.25f, a->q, XDIM, XD, a->K, XDIM, XD,
                                   0.0f, a->P, NP, pstride, HEADS);
    if (!rc) rc = kcu_softmax_fwd(c, a->P, a->P, HEADS * nq, NP);
    if (!rc) rc = kcu_gemm_batched(c, 0, 0, nq, XD, NP, 1.0f, a->P, NP, pstride, a->V, XDIM, XD,
                                   0.0f, a->att, XDIM, XD, HEADS);
    if (!rc) rc = kcu_linear_ex(c, out, C, a->att, XDIM, w->ow, w->ob, res, C, nq, C, XDIM,
                                KCU_ACT_NONE);
    return rc;
}

/* Image→token attention: keys += Attn(q = kp, k = kin[:nt], v = vin[:nt]) · Woᵀ + bo, then
 * keys = norm4(keys) and kp = keys + pe. */
static int i2t(samdec_cuda_t *d, const dlayer_t *L, const float *kin, const float *vin, int nt)
{
    kcu_ctx_t *c = d->ctx;
    const dattn_t *w = &L->i2t;
    int rc = kcu_linear_fwd(c, d->ikt, kin, w->kw, w->kb, nt, C, XDIM);
    if (!rc) rc = kcu_linear_fwd(c, d->ivt, vin, w->vw, w->vb, nt, C, XDIM);
    if (!rc) rc = kcu_linear_fwd(c, d->iq, d->kp, w->qw, w->qb, NP, C, XDIM);
    if (!rc) rc = kcu_attention_fwd(c, d->iatt, d->iq, XDIM, d->ikt, XDIM, d->ivt, XDIM, NULL,
                                    HEADS, NP, nt, XD, 0.25f);
    if (!rc) rc = kcu_linear_ex(c, d->keys, C, d->iatt, XDIM, w->ow, w->ob, d->keys, C, NP, C,
                                XDIM, KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_add_fwd(c, d->keys, d->kp, d->pe, d->keys, L->n4.w, L->n4.b, NP, C,
                                        LN_EPS);
    return rc;
}

/* LayerNorm of nq token rows x → y, statistics into st (mean [MAXQ], rstd [MAXQ]) */
static int tok_ln(samdec_cuda_t *d, float *y, const float *x, const dln_t *n, float *st, int nq)
{
    return kcu_layernorm_fwd(d->ctx, y, st, st + MAXQ, x, n->w, n->b, nq, C, LN_EPS);
}

static int layer(samdec_cuda_t *d, int l, int nq, int nt)
{
    kcu_ctx_t *c = d->ctx;
    const dlayer_t *L = &d->L[l];
    dlact_t *a = &d->A[l];
    float *Q = d->Q, *T0 = d->t0, *tmp = d->tmp;
    int rc;
    if (l == 0) { /* queries = keys = values = the tokens themselves, no residual */
        rc = self_attn(d, &L->self, a, Q, Q, NULL, nq, nt);
    } else {
        rc = add_rows(c, tmp, Q, T0, nq);
        if (!rc) rc = self_attn(d, &L->self, a, tmp, Q, Q, nq, nt);
    }
    if (!rc) rc = tok_ln(d, Q, a->sa_pre, &L->n1, a->st, nq);
    if (!rc) rc = add_rows(c, tmp, Q, T0, nq);
    if (!rc) rc = t2i(d, &L->t2i, &a->ca, tmp, d->kp, d->keys, Q, a->ca_pre, nq);
    if (!rc) rc = tok_ln(d, a->x2, a->ca_pre, &L->n2, a->st + 2 * MAXQ, nq);
    if (!rc) rc = kcu_linear_fwd(c, a->h, a->x2, L->l1w, L->l1b, nq, C, MLP_DIM);
    if (!rc) rc = kcu_relu_fwd(c, a->h, a->h, (size_t)nq * MLP_DIM);
    if (!rc) rc = kcu_linear_ex(c, a->mlp_pre, C, a->h, MLP_DIM, L->l2w, L->l2b, a->x2, C, nq, C,
                                MLP_DIM, KCU_ACT_NONE);
    if (!rc) rc = tok_ln(d, Q, a->mlp_pre, &L->n3, a->st + 4 * MAXQ, nq);
    if (!rc) rc = add_rows(c, tmp, Q, T0, nt);
    if (!rc) rc = i2t(d, L, tmp, Q, nt);
    return rc;
}

static int mlp3(samdec_cuda_t *d, const dmlp3_t *m, const float *x, float *out, int o)
{
    kcu_ctx_t *c = d->ctx;
    float *h1 = d->hh, *h2 = d->hh + C;
    int rc = kcu_linear_fwd(c, h1, x, m->w[0], m->b[0], 1, C, C);
    if (!rc) rc = kcu_relu_fwd(c, h1, h1, C);
    if (!rc) rc = kcu_linear_fwd(c, h2, h1, m->w[1], m->b[1], 1, C, C);
    if (!rc) rc = kcu_relu_fwd(c, h2, h2, C);
    if (!rc) rc = kcu_linear_fwd(c, out, h2, m->w[2], m->b[2], 1, C, o);
    return rc;
}

/* src (keys, token-major) = emb + dense prompt */
static int image_side(samdec_cuda_t *d, const float *emb, const float *mask_in)
{
    kcu_ctx_t *c = d->ctx;
    int rc;
    if (!mask_in) { /* keys = embᵀ + no_mask on every row (a rank-1 GEMM, exact in fp32) */
        rc = kcu_transpose(c, d->keys, emb, C, NP, 1);
        if (!rc) rc = kcu_gemm(c, 0, 0, NP, C, 1, 1.0f, d->ones, 1, d->no_mask, C, 1.0f, d->keys,
                               C);
        return rc;
    }
    rc = kcu_conv2d_fwd(c, d->m1, mask_in, d->md0w, d->md0b, 1, 1, SAM_LOWRES, SAM_LOWRES, 4, 2, 2,
                        0, 1);
    if (!rc) rc = kcu_layernorm2d_fwd(c, d->m1, d->m1, d->md1w, d->md1b, 4, 128 * 128, LN2D_EPS);
    if (!rc) rc = kcu_gelu_fwd(c, d->m1, d->m1, (size_t)4 * 128 * 128);
    if (!rc) rc = kcu_conv2d_fwd(c, d->m2, d->m1, d->md3w, d->md3b, 1, 4, 128, 128, 16, 2, 2, 0, 1);
    if (!rc) rc = kcu_layernorm2d_fwd(c, d->m2, d->m2, d->md4w, d->md4b, 16, NP, LN2D_EPS);
    if (!rc) rc = kcu_gelu_fwd(c, d->m2, d->m2, (size_t)16 * NP);
    if (!rc) rc = kcu_conv2d_fwd(c, d->big, d->m2, d->md6w, d->md6b, 1, 16, SAM_EMB, SAM_EMB, C, 1,
                                 1, 0, 1);
    if (!rc) rc = kcu_add(c, d->big, d->big, emb, (size_t)NP * C);
    if (!rc) rc = kcu_transpose(c, d->keys, d->big, C, NP, 1);
    return rc;
}

static int forward_device(samdec_cuda_t *d, const float *emb, const float *mask_in, int nt, int H,
                          float *lowres, float *iou, const samdec_cuda_extra_t *x)
{
    kcu_ctx_t *c = d->ctx;
    int nq = nt + H;
    int rc = image_side(d, emb, mask_in);
    if (!rc) rc = kcu_add(c, d->kp, d->keys, d->pe, (size_t)NP * C);
    if (!rc) rc = kcu_copy(c, d->Q, d->t0, sizeof(float) * (size_t)nq * C);
    for (int l = 0; l < 2 && !rc; l++) rc = layer(d, l, nq, nt);
    /* final token→image attention over every row (rows are independent; the prompt rows
     * are simply not read afterwards) */
    if (!rc) rc = add_rows(c, d->tmp, d->Q, d->t0, nq);
    if (!rc) rc = t2i(d, &d->fin, &d->fa, d->tmp, d->kp, d->keys, d->Q, d->fin_pre, nq);
    if (!rc) rc = tok_ln(d, d->Q, d->fin_pre, &d->nfin, d->fin_st, nq);
    if (!rc && H) rc = kcu_copy(c, x->hq_out, d->Q + (size_t)nt * C, sizeof(float) * C);
    /* heads: iou from token 0, hypernetwork vectors from tokens 1..4 */
    if (!rc && iou) rc = mlp3(d, &d->iouh, d->Q, iou, SAM_NMASK);
    for (int i = 0; i < SAM_NMASK && !rc && lowres; i++)
        rc = mlp3(d, &d->hyper[i], d->Q + (size_t)(1 + i) * C, d->hyp + i * HYP, HYP);
    if (rc || (!lowres && !(x && x->up))) return rc;
    /* upscaling: [256, 64, 64] → convT → LN2d → GELU → convT → GELU = up [32, 256, 256] */
    float *upm = x && x->up ? x->up : d->up;
    rc = kcu_transpose(c, d->big, d->keys, NP, C, 1);
    if (!rc) rc = kcu_convt2x2_fwd(c, d->y1, d->big, d->up0w, d->up0b, 1, C, SAM_EMB, SAM_EMB, 64);
    if (!rc) rc = kcu_layernorm2d_fwd(c, d->y1, d->y1, d->up1w, d->up1b, 64, 128 * 128, LN2D_EPS);
    if (!rc) rc = kcu_gelu_fwd(c, d->y1, d->y1, (size_t)64 * 128 * 128);
    if (!rc) rc = kcu_convt2x2_fwd(c, upm, d->y1, d->up3w, d->up3b, 1, 64, 128, 128, HYP);
    if (!rc) rc = kcu_gelu_fwd(c, upm, upm, (size_t)HYP * LR_N);
    /* lowres[4, 65536] = hyper[4, 32] · up[32, 65536] */
    if (!rc && lowres)
        rc = kcu_gemm(c, 0, 0, SAM_NMASK, (int)LR_N, HYP, 1.0f, d->hyp, HYP, upm, (int)LR_N, 0.0f,
                      lowres, (int)LR_N);
    return rc;
}

/* rc from a queued op → err (the context holds the message) */
static int op_err(samdec_cuda_t *d, int rc, const char *what, err_t *err)
{
    return rc ? err_set(err, rc, "%s: %s", what, kcu_errmsg(d->ctx)) : 0;
}

int samdec_cuda_forward(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts, int n,
                        const float *mask_in_dev, float *lowres_dev, float *iou_dev,
                        const samdec_cuda_extra_t *x, err_t *err)
{
    if (!d || !emb_dev) return err_set(err, ERR_INVALID, "samdec_cuda_forward: NULL argument");
    if (n < 1 || n > SAMDEC_CUDA_MAX_PTS)
        return err_set(err, ERR_INVALID, "samdec_cuda_forward: %d prompt points (allowed 1..%d)",
                       n, SAMDEC_CUDA_MAX_PTS);
    int rc = samdec_check_points(pts, n, SAMDEC_CUDA_MAX_PTS, err);
    if (rc < 0) return rc;
    const int H = x && x->hq_token ? 1 : 0;
    if (H && !x->hq_out)
        return err_set(err, ERR_INVALID, "samdec_cuda_forward: hq_out is NULL");
    int nt = 5 + n;
    d->trace_valid = 0;
    samdec_prompt_tokens(&d->pw, pts, n, d->tok_h);
    rc = kcu_upload(d->ctx, d->t0, d->tok_h, sizeof(float) * (size_t)nt * C);
    if (!rc && H) rc = kcu_copy(d->ctx, d->t0 + (size_t)nt * C, x->hq_token, sizeof(float) * C);
    int tf32 = kcu_get_tf32(d->ctx);
    kcu_set_tf32(d->ctx, 0);
    if (!rc) rc = forward_device(d, emb_dev, mask_in_dev, nt, H, lowres_dev, iou_dev, x);
    kcu_set_tf32(d->ctx, tf32);
    if (!rc && H && x->trace) {
        d->trace_valid = 1;
        d->trace_nt = nt;
    }
    return op_err(d, rc, "samdec_cuda_forward", err);
}

int samdec_cuda_forward_resident(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts,
                                 int n, err_t *err)
{
    int rc = samdec_cuda_forward(d, emb_dev, pts, n, NULL, d ? d->lr_d : NULL,
                                 d ? d->iou_d : NULL, NULL, err);
    return rc ? rc : kcu_sync(d->ctx, err);
}

int samdec_cuda_predict(samdec_cuda_t *d, const float *emb_dev, const prep_info_t *info,
                        const sam_prompt_t *p, sam_result_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!d || !info || !p) return err_set(err, ERR_INVALID, "samdec_cuda_predict: NULL argument");
    sam_point_t pts[SAM_MAX_POINTS + 2];
    int n = sam_prompt_points(info, p, pts, err);
    if (n < 0) return n;
    if (n > SAMDEC_CUDA_MAX_PTS)
        return err_set(err, ERR_RANGE, "samdec_cuda_predict: %d decoder points (the GPU decoder "
                       "takes at most %d)", n, SAMDEC_CUDA_MAX_PTS);
    float *lr = malloc(sizeof(float) * SAM_NMASK * LR_N), iou[SAM_NMASK];
    if (!lr) return err_set(err, ERR_NOMEM, "samdec_cuda_predict: out of memory");
    int rc = p->mask_in ? kcu_upload(d->ctx, d->mask_d, p->mask_in, sizeof(float) * LR_N) : 0;
    if (rc) rc = op_err(d, rc, "samdec_cuda_predict", err);
    if (!rc) rc = samdec_cuda_forward(d, emb_dev, pts, n, p->mask_in ? d->mask_d : NULL, d->lr_d,
                                      d->iou_d, NULL, err);
    if (!rc) rc = kcu_sync(d->ctx, err);
    if (!rc && (kcu_download(d->ctx, lr, d->lr_d, sizeof(float) * SAM_NMASK * LR_N) ||
                kcu_download(d->ctx, iou, d->iou_d, sizeof iou)))
        rc = op_err(d, ERR_DEVICE, "samdec_cuda_predict", err);
    if (!rc) rc = sam_result_from_lowres(info, p, n, lr, iou, out, err);
    free(lr);
    return rc;
}

/* ---- hq token backward (samdec_hq_backward's algebra on the kept buffers, row r) ----------- */

/* LayerNorm backward of row r: dx = d LN(x_r) / dx_r · dy */
static int ln_row_bwd(samdec_cuda_t *d, float *dx, const float *dy, const float *x,
                      const float *st, const dln_t *n, int r)
{
    return kcu_layernorm_bwd(d->ctx, dx, NULL, NULL, dy, x + (size_t)r * C, st + r, st + MAXQ + r,
                             n->w, 1, C);
}

/* token→image attention of nq query rows, row r: d out[256] → d qin[256] */
static int t2i_bwd(samdec_cuda_t *d, const dattn_t *w, const dt2i_t *a, const float *dout,
                   float *dqin, int nq, int r)
{
    kcu_ctx_t *c = d->ctx;
    float *datt = d->bw, *dtq = datt + XDIM, *dP = dtq + XDIM, *dl = dP + (size_t)HEADS * NP;
    int rc = kcu_linear_bwd(c, datt, NULL, NULL, dout, a->att + (size_t)r * XDIM, w->ow, 1, XDIM, C);
    /* dP_h[4096] = datt_h · V_hᵀ */
    if (!rc) rc = kcu_gemm_batched(c, 0, 1, 1, NP, XD, 1.0f, datt, XD, XD, a->V, XDIM, XD, 0.0f, dP,
                                   NP, NP, HEADS);
    for (int h = 0; h < HEADS && !rc; h++)
        rc = kcu_softmax_bwd(c, dl + (size_t)h * NP, dP + (size_t)h * NP,
                             a->P + ((size_t)h * nq + r) * NP, 1, NP);
    /* dq_h = s · dl_h · K_h */
    if (!rc) rc = kcu_gemm_batched(c, 0, 0, 1, XD, NP, 0.25f, dl, NP, NP, a->K, XDIM, XD, 0.0f, dtq,
                                   XD, XD, HEADS);
    if (!rc) rc = kcu_linear_bwd(c, dqin, NULL, NULL, dtq, a->q + (size_t)r * XDIM, w->qw, 1, C, XDIM);
    return rc;
}

/* self-attention, row r (keys/values constants): d out[256] → d qin[256] */
static int self_bwd(samdec_cuda_t *d, const dattn_t *w, const dlact_t *a, const float *dout,
                    float *dqin, int nk, int r)
{
    kcu_ctx_t *c = d->ctx;
    float *datt = d->bw, *dsq = datt + C;
    int rc = kcu_linear_bwd(c, datt, NULL, NULL, dout, a->satt + (size_t)r * C, w->ow, 1, C, C);
    if (!rc) rc = kcu_attention_bwd(c, dsq, NULL, NULL, datt, a->sq + (size_t)r * C, C, a->sk, C,
                                    a->sv, C, NULL, HEADS, 1, nk, SD, 1.0f / sqrtf((float)SD));
    if (!rc) rc = kcu_linear_bwd(c, dqin, NULL, NULL, dsq, a->sq + (size_t)r * C, w->qw, 1, C, C);
    return rc;
}

static int hq_backward(samdec_cuda_t *d, const float *d_hq_out, float *dtok)
{
    kcu_ctx_t *c = d->ctx;
    int r = d->trace_nt, nq = r + 1, nk = r;
    float *g = d->bw + 4 * (size_t)HEADS * NP, *dpre = g + C, *dq = dpre + C, *dm = dq + C;
    float *dh = dm + C;
    /* final attention: fin_pre = x + t2i(x + tok); out = norm_final(fin_pre) */
    int rc = ln_row_bwd(d, dpre, d_hq_out, d->fin_pre, d->fin_st, &d->nfin, r);
    if (!rc) rc = t2i_bwd(d, &d->fin, &d->fa, dpre, dq, nq, r);
    if (!rc) rc = kcu_add(c, g, dpre, dq, C);
    if (!rc) rc = kcu_copy(c, dtok, dq, sizeof(float) * C);
    for (int l = 1; l >= 0 && !rc; l--) {
        const dlayer_t *L = &d->L[l];
        const dlact_t *a = &d->A[l];
        /* norm3(x2 + mlp(x2)) */
        rc = ln_row_bwd(d, dpre, g, a->mlp_pre, a->st + 4 * MAXQ, &L->n3, r);
        const float *hr = a->h + (size_t)r * MLP_DIM;
        if (!rc) rc = kcu_linear_bwd(c, dh, NULL, NULL, dpre, hr, L->l2w, 1, MLP_DIM, C);
        if (!rc) rc = kcu_relu_bwd(c, dh, dh, hr, MLP_DIM);
        if (!rc) rc = kcu_linear_bwd(c, dm, NULL, NULL, dh, a->x2 + (size_t)r * C, L->l1w, 1, C,
                                     MLP_DIM);
        if (!rc) rc = kcu_add(c, g, dpre, dm, C);
        /* norm2(x1 + t2i(x1 + tok)) */
        if (!rc) rc = ln_row_bwd(d, dpre, g, a->ca_pre, a->st + 2 * MAXQ, &L->n2, r);
        if (!rc) rc = t2i_bwd(d, &L->t2i, &a->ca, dpre, dq, nq, r);
        if (!rc) rc = kcu_add(c, g, dpre, dq, C);
        if (!rc) rc = kcu_add(c, dtok, dtok, dq, C);
        /* layer 1: norm1(x_in + self(x_in + tok)); layer 0: norm1(self(tok)) */
        if (!rc) rc = ln_row_bwd(d, dpre, g, a->sa_pre, a->st, &L->n1, r);
        if (!rc) rc = self_bwd(d, &L->self, a, dpre, dq, nk, r);
        if (!rc) rc = kcu_add(c, dtok, dtok, dq, C);
        if (!rc) rc = kcu_add(c, g, dpre, dq, C);
    }
    return rc;
}

int samdec_cuda_hq_backward(samdec_cuda_t *d, const float *d_hq_out_dev, float *d_hq_token_dev,
                            err_t *err)
{
    if (!d || !d_hq_out_dev || !d_hq_token_dev)
        return err_set(err, ERR_INVALID, "samdec_cuda_hq_backward: NULL argument");
    if (!d->trace_valid)
        return err_set(err, ERR_STATE, "samdec_cuda_hq_backward: no traced hq forward recorded");
    int tf32 = kcu_get_tf32(d->ctx);
    kcu_set_tf32(d->ctx, 0);
    int rc = hq_backward(d, d_hq_out_dev, d_hq_token_dev);
    kcu_set_tf32(d->ctx, tf32);
    return op_err(d, rc, "samdec_cuda_hq_backward", err);
}

#else /* no CUDA in this build */

struct samdec_cuda {
    int unused;
};

samdec_cuda_t *samdec_cuda_new(const wts_t *w, kcu_ctx_t *ctx, err_t *err)
{
    (void)w;
    (void)ctx;
    err_set(err, ERR_UNSUPPORTED, "samdec_cuda: this build has no CUDA kernels");
    return NULL;
}

void samdec_cuda_destroy(samdec_cuda_t **d)
{
    if (d) *d = NULL;
}

int samdec_cuda_forward(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts, int n,
                        const float *mask_in_dev, float *lowres_dev, float *iou_dev,
                        const samdec_cuda_extra_t *x, err_t *err)
{
    (void)d;
    (void)emb_dev;
    (void)pts;
    (void)n;
    (void)mask_in_dev;
    (void)lowres_dev;
    (void)iou_dev;
    (void)x;
    return err_set(err, ERR_UNSUPPORTED, "samdec_cuda: this build has no CUDA kernels");
}

int samdec_cuda_predict(samdec_cuda_t *d, const float *emb_dev, const prep_info_t *info,
                        const sam_prompt_t *p, sam_result_t *out, err_t *err)
{
    (void)d;
    (void)emb_dev;
    (void)info;
    (void)p;
    memset(out, 0, sizeof *out);
    return err_set(err, ERR_UNSUPPORTED, "samdec_cuda: this build has no CUDA kernels");
}

int samdec_cuda_forward_resident(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts,
                                 int n, err_t *err)
{
    (void)d;
    (void)emb_dev;
    (void)pts;
    (void)n;
    return err_set(err, ERR_UNSUPPORTED, "samdec_cuda: this build has no CUDA kernels");
}

int samdec_cuda_hq_backward(samdec_cuda_t *d, const float *d_hq_out_dev, float *d_hq_token_dev,
                            err_t *err)
{
    (void)d;
    (void)d_hq_out_dev;
    (void)d_hq_token_dev;
    return err_set(err, ERR_UNSUPPORTED, "samdec_cuda: this build has no CUDA kernels");
}

#endif
