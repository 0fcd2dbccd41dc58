/* sam_decoder.c — SAM prompt encoder + two-way mask decoder + IoU head (samdec_*).
 *
 * Follows the ONNX export of the official SAM decoder (SamOnnxModel) exactly; layer facts
 * in ../shared/design/MODEL.md, header contract in sam_parts.h. Everything runs on
 * token-major tensors: the image side is [4096, 256] (row p = y*64 + x), tokens [Nt, 256]
 * with Nt = 5 + npoints (iou token, 4 mask tokens, sparse prompt embeddings).
 *
 * Speed (the image side has 4096 tokens, the token side ~7): the cross-attentions never
 * project the image side. With q/k/v/out weights Wq, Wk, Wv, Wo (rows of head h:
 * h*16..h*16+15) they are evaluated re-associated, which is the same sum in another order:
 *   tokens→image:  logits_h = (s·q_h Wk_h)(img+pe)ᵀ  (+ s·q_h·bk_h, constant along the
 *                  softmax row, so dropped),  out_h = (P_h · img) Wv_hᵀ + bv_h
 *                  (softmax rows sum to 1)
 *   image→tokens:  logitsᵀ_h = (s·k_h Wq_h)(img+pe)ᵀ + s·k_h·bq_h  ([Nt, 4096] per head,
 *                  softmax over the Nt rows), out = Σ_h P_hᵀ (v_h Wo_hᵀ + bo/8)
 * so every image-side GEMM has width 8·Nt instead of 128/256. The final tokens→image
 * attention runs only for the 5 output tokens (the prompt rows are never read again).
 * Layer 0 without a mask prompt depends only on the embedding. The first prompt on an
 * embedding runs it re-associated like layer 1 and keeps a copy of the embedding (and its
 * token-major src); a second prompt on a bit-identical embedding (memcmp) computes layer
 * 0's three image-side projections once, and from then on layer 0 is plain attention on
 * them (~6 ms less per prompt). One-prompt-per-image callers never pay for projections
 * they would not reuse. A mask prompt always runs layer 0 re-associated. Upscaling: convT1 as a
 * Linear over token-major rows (weights re-laid out once), fused LayerNorm2d+GELU over the
 * 64 channels of each output pixel, convT2 as a channel-major GEMM, then GELU and the
 * hypernetwork product fused (kn_gelu_linear_fwd), scattered to the 256×256 grid.
 * Image-side element-wise work runs in decoder ops on the kn_parallel_for pool and the
 * token side on the calling thread, so a prompt has few OpenMP fork/joins (each cost a
 * scheduler round on the busy dev machine). Measured: ~27 ms CPU per prompt on one core of
 * the shared dev machine (onnxruntime 1 thread: 100–280 ms in the same runs); ~40 MB of
 * activations and caches per samdec_t.
 *
 * MoDA hq token (samdec_forward_ex, sam_parts.h): one extra query row appended after the
 * prompt tokens (row nt of the token-side buffers). It is a query in both token
 * self-attentions (keys and values: the nt SAM tokens only) and in the three token→image
 * attentions, never a key/value and never part of the image→token attentions, so the SAM
 * rows and the image side are computed as without it. Its path is recorded in a
 * samdec_trace_t and back-propagated by samdec_hq_backward with the same re-associated
 * algebra (d logits_h → d(s·q_h Wk_h) = dl·kp, and dP_h = img · (Wv_hᵀ d out_h); the k and v
 * biases only add row constants that softmax ignores).
 *
 * Invariants: weights are borrowed from the wts_t (validated in samdec_new); all activation
 * memory lives in the samdec_t (fixed image-side buffers plus token-side buffers grown on
 * demand); one forward at a time per object.
 */
#include "sam_parts.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

#define NP (SAM_EMB * SAM_EMB) /* 4096 image tokens */
#define C SAM_EMB_C            /* 256 */
#define HEADS 8
#define XDIM 128               /* cross-attention internal width */
#define XD (XDIM / HEADS)      /* 16 per head */
#define MLP_DIM 2048
#define HYP 32                 /* upscaled channels */
#define MAX_POINTS 256         /* prompt points per call (token buffers grow with it) */
#define UPB 8192               /* upscaling column block */
#define LN_EPS 1e-5f
#define LN2D_EPS 1e-6f

typedef struct attn_w {
    const float *qw, *qb, *kw, *kb, *vw, *vb, *ow, *ob;
    int inner;
} attn_w_t;

typedef struct ln_w {
    const float *w, *b;
} ln_w_t;

typedef struct layer_w {
    attn_w_t self, t2i, i2t;
    ln_w_t n1, n2, n3, n4;
    const float *l1w, *l1b, *l2w, *l2b;
} layer_w_t;

typedef struct mlp3_w {
    const float *w[3], *b[3];
} mlp3_w_t;

struct samdec {
    /* prompt encoder (borrowed) */
    samdec_prompt_w_t pw; /* the token side's inputs (shared with samdec_cuda.c) */
    const float *no_mask;
    const float *md0w, *md0b, *md1w, *md1b, *md3w, *md3b, *md4w, *md4b, *md6w, *md6b;
    /* mask decoder (borrowed) */
    layer_w_t L[2];
    attn_w_t fin;
    ln_w_t nfin;
    const float *up1w, *up1b, *up3b;
    mlp3_w_t hyper[SAM_NMASK], iouh;
    /* owned constants */
    float *pe;       /* [4096,256] dense PE, token-major */
    float *up0t;     /* [4*64, 256]: row s*64+co = w0[:, co, s] */
    float *up0bt;    /* [4*64] */
    float *up3t;     /* [4*32, 64]: row s*32+co = w3[:, co, s] */
    /* image-side activations (owned) */
    float *keys, *kp; /* [4096,256] */
    float *y2;        /* [256,4096]: convT2 block [128, UPB]; the mask path's dense */
    float *rm;        /* [4 s2, 4 masks, UPB] before the scatter */
    float *mscratch;  /* mask path: conv im2col + intermediates */
    /* layer-0 cache (no mask prompt) */
    float *c_emb;            /* [256,4096] copy of the cached embedding */
    float *c_keys;           /* [4096,256] src = embedding + no_mask_embed, token-major */
    float *c_k, *c_v, *c_q;  /* [4096,128] layer-0 t2i k, v and i2t q projections */
    int c_state; /* 0 empty, 1 c_emb + c_keys valid, 2 also c_k/c_v/c_q */
    /* token-side buffers, grown to nt_cap tokens */
    int nt_cap;
    float *t0, *q, *tmp, *tmp2, *qp, *kt, *vt, *att, *mlp, *sc, *bt, *big;
};

/* ---- weights ------------------------------------------------------------------------- */

static const float *get(const wts_t *w, err_t *err, int *bad, const char *name, int ndim,
                        int d0, int d1, int d2, int d3)
{
    if (*bad) return NULL;
    const float *p = NULL;
    switch (ndim) {
    case 1: p = wts_f32(w, name, err, 1, d0); break;
    case 2: p = wts_f32(w, name, err, 2, d0, d1); break;
    case 4: p = wts_f32(w, name, err, 4, d0, d1, d2, d3); break;
    default: break;
    }
    if (!p) *bad = 1;
    return p;
}

static void load_attn(attn_w_t *a, const wts_t *w, err_t *err, int *bad, const char *pfx,
                      int inner)
{
    char n[256];
    a->inner = inner;
#define A_(field, suf, ...) \
    (snprintf(n, sizeof n, "%s.%s", pfx, suf), a->field = get(w, err, bad, n, __VA_ARGS__))
    A_(qw, "q_proj.weight", 2, inner, C, 0, 0);
    A_(qb, "q_proj.bias", 1, inner, 0, 0, 0);
    A_(kw, "k_proj.weight", 2, inner, C, 0, 0);
    A_(kb, "k_proj.bias", 1, inner, 0, 0, 0);
    A_(vw, "v_proj.weight", 2, inner, C, 0, 0);
    A_(vb, "v_proj.bias", 1, inner, 0, 0, 0);
    A_(ow, "out_proj.weight", 2, C, inner, 0, 0);
    A_(ob, "out_proj.bias", 1, C, 0, 0, 0);
#undef A_
}

static void load_ln(ln_w_t *l, const wts_t *w, err_t *err, int *bad, const char *pfx, int n)
{
    char s[256];
    snprintf(s, sizeof s, "%s.weight", pfx);
    l->w = get(w, err, bad, s, 1, n, 0, 0, 0);
    snprintf(s, sizeof s, "%s.bias", pfx);
    l->b = get(w, err, bad, s, 1, n, 0, 0, 0);
}

static void load_mlp3(mlp3_w_t *m, const wts_t *w, err_t *err, int *bad, const char *pfx,
                      int out)
{
    char s[256];
    for (int i = 0; i < 3; i++) {
        int o = i == 2 ? out : C;
        snprintf(s, sizeof s, "%s.layers.%d.weight", pfx, i);
        m->w[i] = get(w, err, bad, s, 2, o, C, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.bias", pfx, i);
        m->b[i] = get(w, err, bad, s, 1, o, 0, 0, 0);
    }
}

static int load_weights(samdec_t *d, const wts_t *w, err_t *err)
{
    int bad = 0;
    char s[256];
    int rc = samdec_prompt_w_load(&d->pw, w, err);
    if (rc < 0) return rc;
    d->no_mask = get(w, err, &bad, "prompt_encoder.no_mask_embed.weight", 2, 1, C, 0, 0);
    d->md0w = get(w, err, &bad, "prompt_encoder.mask_downscaling.0.weight", 4, 4, 1, 2, 2);
    d->md0b = get(w, err, &bad, "prompt_encoder.mask_downscaling.0.bias", 1, 4, 0, 0, 0);
    d->md1w = get(w, err, &bad, "prompt_encoder.mask_downscaling.1.weight", 1, 4, 0, 0, 0);
    d->md1b = get(w, err, &bad, "prompt_encoder.mask_downscaling.1.bias", 1, 4, 0, 0, 0);
    d->md3w = get(w, err, &bad, "prompt_encoder.mask_downscaling.3.weight", 4, 16, 4, 2, 2);
    d->md3b = get(w, err, &bad, "prompt_encoder.mask_downscaling.3.bias", 1, 16, 0, 0, 0);
    d->md4w = get(w, err, &bad, "prompt_encoder.mask_downscaling.4.weight", 1, 16, 0, 0, 0);
    d->md4b = get(w, err, &bad, "prompt_encoder.mask_downscaling.4.bias", 1, 16, 0, 0, 0);
    d->md6w = get(w, err, &bad, "prompt_encoder.mask_downscaling.6.weight", 4, C, 16, 1, 1);
    d->md6b = get(w, err, &bad, "prompt_encoder.mask_downscaling.6.bias", 1, C, 0, 0, 0);

    const char *md = "mask_decoder";
    const char *tr = "mask_decoder.transformer";
    for (int l = 0; l < 2; l++) {
        layer_w_t *L = &d->L[l];
        snprintf(s, sizeof s, "%s.layers.%d.self_attn", tr, l);
        load_attn(&L->self, w, err, &bad, s, C);
        snprintf(s, sizeof s, "%s.layers.%d.cross_attn_token_to_image", tr, l);
        load_attn(&L->t2i, w, err, &bad, s, XDIM);
        snprintf(s, sizeof s, "%s.layers.%d.cross_attn_image_to_token", tr, l);
        load_attn(&L->i2t, w, err, &bad, s, XDIM);
        ln_w_t *ns[4] = {&L->n1, &L->n2, &L->n3, &L->n4};
        for (int k = 0; k < 4; k++) {
            snprintf(s, sizeof s, "%s.layers.%d.norm%d", tr, l, k + 1);
            load_ln(ns[k], w, err, &bad, s, C);
        }
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin1.weight", tr, l);
        L->l1w = get(w, err, &bad, s, 2, MLP_DIM, C, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin1.bias", tr, l);
        L->l1b = get(w, err, &bad, s, 1, MLP_DIM, 0, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin2.weight", tr, l);
        L->l2w = get(w, err, &bad, s, 2, C, MLP_DIM, 0, 0);
        snprintf(s, sizeof s, "%s.layers.%d.mlp.lin2.bias", tr, l);
        L->l2b = get(w, err, &bad, s, 1, C, 0, 0, 0);
    }
    snprintf(s, sizeof s, "%s.final_attn_token_to_image", tr);
    load_attn(&d->fin, w, err, &bad, s, XDIM);
    snprintf(s, sizeof s, "%s.norm_final_attn", tr);
    load_ln(&d->nfin, w, err, &bad, s, C);
    const float *up0w = get(w, err, &bad, "mask_decoder.output_upscaling.0.weight", 4, C, 64, 2, 2);
    const float *up0b = get(w, err, &bad, "mask_decoder.output_upscaling.0.bias", 1, 64, 0, 0, 0);
    d->up1w = get(w, err, &bad, "mask_decoder.output_upscaling.1.weight", 1, 64, 0, 0, 0);
    d->up1b = get(w, err, &bad, "mask_decoder.output_upscaling.1.bias", 1, 64, 0, 0, 0);
    const float *up3w = get(w, err, &bad, "mask_decoder.output_upscaling.3.weight", 4, 64, HYP, 2, 2);
    d->up3b = get(w, err, &bad, "mask_decoder.output_upscaling.3.bias", 1, HYP, 0, 0, 0);
    for (int i = 0; i < SAM_NMASK; i++) {
        snprintf(s, sizeof s, "%s.output_hypernetworks_mlps.%d", md, i);
        load_mlp3(&d->hyper[i], w, err, &bad, s, HYP);
    }
    snprintf(s, sizeof s, "%s.iou_prediction_head", md);
    load_mlp3(&d->iouh, w, err, &bad, s, SAM_NMASK);
    if (bad) return err_wrap(err, "sam decoder weights");

    /* convT weights w[ci, co, s] (s = dy*2+dx) -> rows (s, co) of a Linear over ci */
    for (int s4 = 0; s4 < 4; s4++)
        for (int co = 0; co < 64; co++) {
            d->up0bt[s4 * 64 + co] = up0b[co];
            for (int ci = 0; ci < C; ci++)
                d->up0t[(size_t)(s4 * 64 + co) * C + ci] = up0w[((size_t)ci * 64 + co) * 4 + s4];
        }
    for (int s4 = 0; s4 < 4; s4++)
        for (int co = 0; co < HYP; co++) {
            for (int ci = 0; ci < 64; ci++)
                d->up3t[(size_t)(s4 * HYP + co) * 64 + ci] = up3w[((size_t)ci * HYP + co) * 4 + s4];
        }
    return 0;
}

/* Fourier features of one point already mapped to [-1,1]²: out[256] = [sin v, cos v],
 * v = 2π (cx G[0] + cy G[1]), in float in the export's operation order. */
static void pe_encode(const float *g, float cx, float cy, float *out)
{
    for (int k = 0; k < C / 2; k++) {
        float v = cx * g[k] + cy * g[C / 2 + k];
        v = v * 6.2831854820251465f;
        out[k] = sinf(v);
        out[C / 2 + k] = cosf(v);
    }
}

/* ---- prompt encoder host math (sam_parts.h; also used by samdec_cuda.c) ----------------- */

int samdec_prompt_w_load(samdec_prompt_w_t *p, const wts_t *w, err_t *err)
{
    int bad = 0;
    char s[256];
    p->pe_g = get(w, err, &bad, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                  2, 2, C / 2, 0, 0);
    for (int i = 0; i < 4; i++) {
        snprintf(s, sizeof s, "prompt_encoder.point_embeddings.%d.weight", i);
        p->pt_emb[i] = get(w, err, &bad, s, 2, 1, C, 0, 0);
    }
    p->not_a_point = get(w, err, &bad, "prompt_encoder.not_a_point_embed.weight", 2, 1, C, 0, 0);
    p->iou_tok = get(w, err, &bad, "mask_decoder.iou_token.weight", 2, 1, C, 0, 0);
    p->mask_toks = get(w, err, &bad, "mask_decoder.mask_tokens.weight", 2, SAM_NMASK, C, 0, 0);
    return bad ? err_wrap(err, "sam decoder weights") : 0;
}

void samdec_prompt_tokens(const samdec_prompt_w_t *p, const sam_point_t *pts, int n, float *t0)
{
    memcpy(t0, p->iou_tok, sizeof(float) * C);
    memcpy(t0 + C, p->mask_toks, sizeof(float) * SAM_NMASK * C);
    for (int i = 0; i < n; i++) {
        float *t = t0 + (size_t)(5 + i) * C;
        int lab = (int)pts[i].label;
        if (lab == -1) {
            memcpy(t, p->not_a_point, sizeof(float) * C);
            continue;
        }
        float cx = ((pts[i].x + 0.5f) / (float)SAM_IMG) * 2.0f - 1.0f;
        float cy = ((pts[i].y + 0.5f) / (float)SAM_IMG) * 2.0f - 1.0f;
        pe_encode(p->pe_g, cx, cy, t);
        for (int c = 0; c < C; c++) t[c] += p->pt_emb[lab][c];
    }
}

void samdec_dense_pe(const float *pe_g, float *pe)
{
    /* cell centres ((j+0.5)/64, (i+0.5)/64) mapped to [-1, 1] */
    for (int i = 0; i < SAM_EMB; i++)
        for (int j = 0; j < SAM_EMB; j++) {
            float cx = 2.0f * ((j + 0.5f) / SAM_EMB) - 1.0f;
            float cy = 2.0f * ((i + 0.5f) / SAM_EMB) - 1.0f;
            pe_encode(pe_g, cx, cy, pe + (size_t)(i * SAM_EMB + j) * C);
        }
}

/* ---- lifetime -------------------------------------------------------------------------- */

static float *falloc(size_t n)
{
    return (float *)aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
}

samdec_t *samdec_new(const wts_t *w, err_t *err)
{
    if (!w) {
        err_set(err, ERR_INVALID, "samdec_new: weights are NULL");
        return NULL;
    }
    samdec_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(err, ERR_NOMEM, "samdec_new: out of memory");
        return NULL;
    }
    d->pe = falloc((size_t)NP * C);
    d->up0t = falloc(256 * C);
    d->up0bt = falloc(256);
    d->up3t = falloc(128 * 64);
    d->keys = falloc((size_t)NP * C);
    d->kp = falloc((size_t)NP * C);
    d->y2 = falloc((size_t)NP * C);
    d->rm = falloc((size_t)16 * UPB);
    d->mscratch = falloc((size_t)4 * 128 * 128 * 2 + (size_t)16 * 64 * 64 * 2);
    d->c_emb = falloc((size_t)NP * C);
    d->c_keys = falloc((size_t)NP * C);
    d->c_k = falloc((size_t)NP * XDIM);
    d->c_v = falloc((size_t)NP * XDIM);
    d->c_q = falloc((size_t)NP * XDIM);
    if (!d->pe || !d->up0t || !d->up0bt || !d->up3t || !d->keys || !d->kp ||
        !d->y2 || !d->rm || !d->mscratch || !d->c_emb || !d->c_keys || !d->c_k ||
        !d->c_v || !d->c_q) {
        err_set(err, ERR_NOMEM, "samdec_new: out of memory for activations");
        samdec_destroy(&d);
        return NULL;
    }
    if (load_weights(d, w, err) < 0) {
        samdec_destroy(&d);
        return NULL;
    }
    samdec_dense_pe(d->pw.pe_g, d->pe);
    return d;
}

static void free_tokens(samdec_t *d)
{
    float **bufs[] = {&d->t0, &d->q, &d->tmp, &d->tmp2, &d->qp, &d->kt, &d->vt,
                      &d->att, &d->mlp, &d->sc, &d->bt, &d->big};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    d->nt_cap = 0;
}

void samdec_destroy(samdec_t **dp)
{
    if (!dp || !*dp) return;
    samdec_t *d = *dp;
    free_tokens(d);
    float *bufs[] = {d->pe, d->up0t, d->up0bt, d->up3t, d->keys, d->kp, d->y2,
                     d->rm, d->mscratch, d->c_emb, d->c_keys, d->c_k, d->c_v,
                     d->c_q};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(d);
    *dp = NULL;
}

static int ensure_tokens(samdec_t *d, int nt, err_t *err)
{
    if (nt <= d->nt_cap) return 0;
    free_tokens(d);
    size_t n = (size_t)nt;
    d->t0 = falloc(n * C);
    d->q = falloc(n * C);
    d->tmp = falloc(n * C);
    d->tmp2 = falloc(n * C);
    d->qp = falloc(n * C);
    d->kt = falloc(n * C);
    d->vt = falloc(n * C);
    d->att = falloc(n * C);
    d->mlp = falloc(n * MLP_DIM);
    d->sc = falloc(n * n * HEADS);
    d->bt = falloc(n * HEADS * C);
    d->big = falloc(n * HEADS * NP);
    if (!d->t0 || !d->q || !d->tmp || !d->tmp2 || !d->qp || !d->kt || !d->vt || !d->att ||
        !d->mlp || !d->sc || !d->bt || !d->big) {
        free_tokens(d);
        return err_set(err, ERR_NOMEM, "samdec_forward: out of memory for %d tokens", nt);
    }
    d->nt_cap = nt;
    return 0;
}

/* ---- transformer pieces ------------------------------------------------------------------ */

/* y[n,256] = x + a on the token side. A plain loop on purpose: a few KB, where an OpenMP
 * fork/join costs more than the work (and much more on an oversubscribed machine). */
static void add_rows(float *y, const float *x, const float *a, int n)
{
    for (size_t i = 0; i < (size_t)n * C; i++) y[i] = x[i] + a[i];
}

/* Row LayerNorm of the few token rows (like kn_layernorm_fwd, double accumulation), on the
 * calling thread for the same reason as add_rows. In place allowed. */
static void tok_layernorm(float *y, const float *x, const ln_w_t *l, int n)
{
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) s += xr[c];
        float m = (float)(s / C);
        for (int c = 0; c < C; c++) ss += (double)(xr[c] - m) * (xr[c] - m);
        float rs = 1.0f / sqrtf((float)(ss / C) + LN_EPS);
        for (int c = 0; c < C; c++) yr[c] = (xr[c] - m) * rs * l->w[c] + l->b[c];
    }
}

/* Token self-attention: out[nq,256] = Attn(q=qin[nq], k=qin[:nk], v=vin[:nk]), 8 heads of
 * 32; the logits of all heads [8, nq, nk] go through one softmax call. nq = nk + 1 when the
 * hq token (last row) is present: it queries but is never a key. */
static void self_attn(samdec_t *d, const attn_w_t *a, const float *qin, const float *vin,
                      float *out, int nq, int nk)
{
    const int dh = C / HEADS;
    kn_linear_fwd(d->qp, qin, a->qw, a->qb, nq, C, C);
    kn_linear_fwd(d->kt, qin, a->kw, a->kb, nk, C, C);
    kn_linear_fwd(d->vt, vin, a->vw, a->vb, nk, C, C);
    float scale = 1.0f / sqrtf((float)dh);
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 1, nq, nk, dh, scale, d->qp + h * dh, C, d->kt + h * dh, C, 0.0f,
                d->sc + (size_t)h * nq * nk, nk);
    kn_softmax_fast_fwd(d->sc, d->sc, HEADS * nq, nk);
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 0, nq, dh, nk, 1.0f, d->sc + (size_t)h * nq * nk, nk, d->vt + h * dh, C, 0.0f,
                d->att + h * dh, C);
    kn_linear_fwd(out, d->att, a->ow, a->ob, nq, C, C);
}

/* Tokens→image cross-attention, re-associated (see file header).
 * qin[nt,256] (nt query tokens + pe), kp[4096,256] (image + pe), img[4096,256]
 * -> out[nt,256].
 * The k bias adds s·q_h·bk_h to a whole logits row, which softmax ignores: dropped. */
static void t2i(samdec_t *d, const attn_w_t *a, const float *qin, const float *kp,
                const float *img, float *out, int nt)
{
    const float scale = 0.25f; /* 1/sqrt(16) */
    int R = HEADS * nt;
    kn_linear_fwd(d->qp, qin, a->qw, a->qb, nt, C, XDIM);
    for (int h = 0; h < HEADS; h++) /* bt rows h*nt+j: s · q_h[j] · Wk_h ([nt,16]·[16,256]) */
        kn_gemm(0, 0, nt, C, XD, scale, d->qp + h * XD, XDIM, a->kw + (size_t)h * XD * C, C,
                0.0f, d->bt + (size_t)h * nt * C, C);
    float *L = d->big; /* [R, 4096] */
    kn_gemm(0, 1, R, NP, C, 1.0f, d->bt, C, kp, C, 0.0f, L, NP);
    kn_softmax_fast_fwd(L, L, R, NP);
    float *O = d->bt; /* [R, 256] = P · img */
    kn_gemm(0, 0, R, C, NP, 1.0f, L, NP, img, C, 0.0f, O, C);
    for (int j = 0; j < nt; j++)
        for (int e = 0; e < XDIM; e++) d->att[j * XDIM + e] = a->vb[e];
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 1, nt, XD, C, 1.0f, O + (size_t)h * nt * C, C, a->vw + (size_t)h * XD * C,
                C, 1.0f, d->att + h * XD, XDIM);
    kn_linear_fwd(out, d->att, a->ow, a->ob, nt, XDIM, C);
}

/* Image→tokens second half, shared by both paths: LT[nt, 8·4096] holds the logits (row
 * j*8+h = token j of head h, one column per image token, i.e. token j's row covers all
 * heads), vt the value projections [nt,128]; softmax over the nt tokens for every
 * (head, pixel) column in one call, then keys += LTᵀ · M with M rows j*8+h =
 * v_h[j] Wo_hᵀ + bo/8 (the 8 heads' probabilities sum to 8 per pixel). */
static void i2t_finish(samdec_t *d, const attn_w_t *a, float *LT, float *keys, int nt)
{
    int R = HEADS * nt;
    kn_softmax_dim0_fast_fwd(LT, LT, nt, HEADS * NP);
    float *M = d->bt;
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 1, nt, C, XD, 1.0f, d->vt + h * XD, XDIM, a->ow + h * XD, XDIM, 0.0f,
                M + (size_t)h * C, HEADS * C);
    for (int r = 0; r < R; r++)
        for (int o = 0; o < C; o++) M[(size_t)r * C + o] += a->ob[o] * 0.125f;
    kn_gemm(1, 0, NP, C, R, 1.0f, LT, NP, M, C, 1.0f, keys, C);
}

/* Image→tokens cross-attention, re-associated: keys[4096,256] += Attn(q=kp, k=kin, v=vin). */
static void i2t(samdec_t *d, const attn_w_t *a, const float *kp, const float *kin,
                const float *vin, float *keys, int nt)
{
    const float scale = 0.25f;
    int R = HEADS * nt;
    kn_linear_fwd(d->kt, kin, a->kw, a->kb, nt, C, XDIM);
    kn_linear_fwd(d->vt, vin, a->vw, a->vb, nt, C, XDIM);
    float *LT = d->big; /* [R, 4096], rows j*8+h */
    for (int h = 0; h < HEADS; h++) {
        kn_gemm(0, 0, nt, C, XD, scale, d->kt + h * XD, XDIM, a->qw + (size_t)h * XD * C, C,
                0.0f, d->bt + (size_t)h * C, HEADS * C);
        for (int j = 0; j < nt; j++) { /* the q bias: s·k_h[j]·bq_h, constant per row */
            float s = 0;
            for (int e = 0; e < XD; e++) s += d->kt[j * XDIM + h * XD + e] * a->qb[h * XD + e];
            float *row = LT + (size_t)(j * HEADS + h) * NP;
            for (int p = 0; p < NP; p++) row[p] = scale * s;
        }
    }
    kn_gemm(0, 1, R, NP, C, 1.0f, d->bt, C, kp, C, 1.0f, LT, NP);
    i2t_finish(d, a, LT, keys, nt);
}

/* Layer-0 cache, step 1 (a new embedding, no mask prompt): keep a copy of emb and its
 * token-major src = emb + no_mask_embed. */
static void cache_src(samdec_t *d, const float *emb)
{
    memcpy(d->c_emb, emb, sizeof(float) * NP * C);
    kn_transpose(d->c_keys, emb, C, NP);
    for (int p = 0; p < NP; p++) {
        float *r = d->c_keys + (size_t)p * C;
        for (int c = 0; c < C; c++) r[c] += d->no_mask[c];
    }
    d->c_state = 1;
}

/* Step 2 (a second prompt on the same embedding): the three image-side projections layer 0
 * needs, after which every further prompt skips them. */
static void cache_proj(samdec_t *d)
{
    float *src_pe = d->kp; /* scratch: src + pe */
    kn_add(src_pe, d->c_keys, d->pe, (size_t)NP * C);
    const attn_w_t *a = &d->L[0].t2i, *b = &d->L[0].i2t;
    kn_linear_fwd(d->c_k, src_pe, a->kw, a->kb, NP, C, XDIM);
    kn_linear_fwd(d->c_v, d->c_keys, a->vw, a->vb, NP, C, XDIM);
    kn_linear_fwd(d->c_q, src_pe, b->qw, b->qb, NP, C, XDIM);
    d->c_state = 2;
}

/* Dense prompt from a 256×256 mask: dense[256, 4096] (channel-major). */
static void embed_mask(samdec_t *d, const float *mask, float *dense)
{
    float *m1 = d->mscratch;               /* [4,128,128] */
    float *m2 = m1 + 4 * 128 * 128;        /* [16,64,64] */
    float *col = m2 + 16 * 64 * 64;        /* im2col, 4*128*128 floats is enough for both */
    kn_conv2d_fwd(m1, mask, d->md0w, d->md0b, 1, SAM_LOWRES, SAM_LOWRES, 4, 2, 2, 0, 1, col);
    kn_layernorm2d_fwd(m1, m1, d->md1w, d->md1b, 4, 128 * 128, LN2D_EPS);
    kn_gelu_fast_fwd(m1, m1, (size_t)4 * 128 * 128);
    kn_conv2d_fwd(m2, m1, d->md3w, d->md3b, 4, 128, 128, 16, 2, 2, 0, 1, col);
    kn_layernorm2d_fwd(m2, m2, d->md4w, d->md4b, 16, NP, LN2D_EPS);
    kn_gelu_fast_fwd(m2, m2, (size_t)16 * NP);
    kn_conv2d_fwd(dense, m2, d->md6w, d->md6b, 16, SAM_EMB, SAM_EMB, C, 1, 1, 0, 1, NULL);
}

static void mlp3(const mlp3_w_t *m, const float *x, float *h1, float *h2, float *out, int o)
{
    kn_linear_fwd(h1, x, m->w[0], m->b[0], 1, C, C);
    kn_relu_fwd(h1, h1, C);
    kn_linear_fwd(h2, h1, m->w[1], m->b[1], 1, C, C);
    kn_relu_fwd(h2, h2, C);
    kn_linear_fwd(out, h2, m->w[2], m->b[2], 1, C, o);
}

/* ---- MoDA hq token: trace of its path (samdec_forward_ex / samdec_hq_backward) ---------- */

typedef struct tr_attn { /* one token→image attention, hq row */
    float q[XDIM], att[XDIM];
    float *P;        /* [HEADS, NP] softmax rows */
    float *kp, *img; /* [NP, C] copies of keys+pe and keys */
} tr_attn_t;

typedef struct tr_layer {
    float x_in[C];         /* hq state entering the layer (layer 1) */
    float sq[C], satt[C];  /* self-attention: q projection, attention output */
    float sa_pre[C];       /* norm1 input */
    tr_attn_t ca;
    float ca_pre[C], x2[C]; /* norm2 input and output (the MLP input) */
    float h[MLP_DIM];       /* MLP hidden after ReLU */
    float mlp_pre[C];       /* norm3 input */
    float *sk, *sv;         /* [nk, C] the SAM tokens' self-attention keys and values */
} tr_layer_t;

struct samdec_trace {
    int valid, nk, nk_cap;
    float tok[C];
    tr_layer_t L[2];
    tr_attn_t fin;
    float fin_pre[C];
    float *scratch; /* backward scratch */
    size_t scratch_n;
};

samdec_trace_t *samdec_trace_new(err_t *err)
{
    samdec_trace_t *t = calloc(1, sizeof *t);
    if (!t) {
        err_set(err, ERR_NOMEM, "samdec_trace_new: out of memory");
        return NULL;
    }
    tr_attn_t *as[3] = {&t->L[0].ca, &t->L[1].ca, &t->fin};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        as[i]->P = falloc((size_t)HEADS * NP);
        as[i]->kp = falloc((size_t)NP * C);
        as[i]->img = falloc((size_t)NP * C);
        bad |= !as[i]->P || !as[i]->kp || !as[i]->img;
    }
    t->scratch_n = 2 * (size_t)HEADS * NP + 4096;
    t->scratch = falloc(t->scratch_n);
    if (bad || !t->scratch) {
        samdec_trace_destroy(&t);
        err_set(err, ERR_NOMEM, "samdec_trace_new: out of memory");
    }
    return t;
}

void samdec_trace_destroy(samdec_trace_t **tp)
{
    if (!tp || !*tp) return;
    samdec_trace_t *t = *tp;
    tr_attn_t *as[3] = {&t->L[0].ca, &t->L[1].ca, &t->fin};
    for (int i = 0; i < 3; i++) {
        free(as[i]->P);
        free(as[i]->kp);
        free(as[i]->img);
    }
    for (int l = 0; l < 2; l++) {
        free(t->L[l].sk);
        free(t->L[l].sv);
    }
    free(t->scratch);
    free(t);
    *tp = NULL;
}

static int trace_reserve(samdec_trace_t *t, int nk, err_t *err)
{
    t->nk = nk;
    if (nk <= t->nk_cap) return 0;
    for (int l = 0; l < 2; l++) {
        free(t->L[l].sk);
        free(t->L[l].sv);
        t->L[l].sk = falloc((size_t)nk * C);
        t->L[l].sv = falloc((size_t)nk * C);
        if (!t->L[l].sk || !t->L[l].sv) {
            t->nk_cap = 0;
            return err_set(err, ERR_NOMEM, "samdec trace: out of memory for %d tokens", nk);
        }
    }
    t->nk_cap = nk;
    return 0;
}

static void rec_row(float *dst, const float *rows, int r)
{
    memcpy(dst, rows + (size_t)r * C, sizeof(float) * C);
}

/* after self_attn: hq row nt of qp/att, the nt SAM keys/values, the norm1 input */
static void rec_self(samdec_trace_t *t, int l, const samdec_t *d, int nt, const float *xin,
                     const float *pre)
{
    tr_layer_t *L = &t->L[l];
    if (xin != L->x_in) memcpy(L->x_in, xin, sizeof(float) * C);
    rec_row(L->sq, d->qp, nt);
    rec_row(L->satt, d->att, nt);
    memcpy(L->sk, d->kt, sizeof(float) * (size_t)nt * C);
    memcpy(L->sv, d->vt, sizeof(float) * (size_t)nt * C);
    memcpy(L->sa_pre, pre, sizeof(float) * C);
}

/* after a token→image attention over nq query rows: the hq row r's q, probabilities and
 * attention output, and the image side it attended to (kp NULL: img + pe) */
static void rec_attn(tr_attn_t *a, const samdec_t *d, int nq, int r, const float *kp,
                     const float *img)
{
    memcpy(a->q, d->qp + (size_t)r * XDIM, sizeof(float) * XDIM);
    memcpy(a->att, d->att + (size_t)r * XDIM, sizeof(float) * XDIM);
    for (int h = 0; h < HEADS; h++)
        memcpy(a->P + (size_t)h * NP, d->big + ((size_t)h * nq + r) * NP, sizeof(float) * NP);
    if (kp) memcpy(a->kp, kp, sizeof(float) * NP * C);
    else kn_add(a->kp, img, d->pe, (size_t)NP * C);
    memcpy(a->img, img, sizeof(float) * NP * C);
}

/* One column block [c0, c0+UPB) of the upscaled feature before its GELU:
 * up[co, y, x] = y2t[(s2, co), c] + b[co] for column c0+c = p*4 + s, pixel
 * (4i + 2dy + ey, 4j + 2dx + ex), p = i*64+j, s = dy*2+dx, s2 = ey*2+ex (the layout of the
 * hypernetwork product; the GELU is applied once at the end, the same as kn_gelu_linear_fwd's). */
typedef struct up_job {
    float *up;
    const float *y2t, *b;
    int c0;
} up_job_t;

static void upscaled_item(void *ctx, int co, int tid)
{
    (void)tid;
    const up_job_t *j = ctx;
    float *dst = j->up + (size_t)co * SAM_LOWRES * SAM_LOWRES;
    for (int s2 = 0; s2 < 4; s2++) {
        const float *src = j->y2t + ((size_t)s2 * HYP + co) * UPB;
        for (int c = 0; c < UPB; c++) {
            int r = j->c0 + c, p = r >> 2, s = r & 3;
            int y = 4 * (p / SAM_EMB) + 2 * (s >> 1) + (s2 >> 1);
            int x = 4 * (p % SAM_EMB) + 2 * (s & 1) + (s2 & 1);
            dst[(size_t)y * SAM_LOWRES + x] = src[c] + j->b[co];
        }
    }
}

/* channels on the kn_parallel_for pool (an OpenMP region per block left the idle team
 * spinning through the adapter's pool work that follows) */
static void upscaled_block(float *up, const float *y2t, const float *b, int c0)
{
    up_job_t j = {up, y2t, b, c0};
    kn_parallel_for(HYP, KN_POOL_ANY, upscaled_item, &j);
}

/* ---- forward --------------------------------------------------------------------------- */

int samdec_pick_single(const float iou[SAM_NMASK], int npoints)
{
    float w = ((float)npoints - 2.5f) * 1000.0f;
    int best = 0;
    float bs = iou[0] + w;
    for (int i = 1; i < SAM_NMASK; i++)
        if (iou[i] > bs) {
            bs = iou[i];
            best = i;
        }
    return best;
}

int samdec_check_points(const sam_point_t *pts, int n, int max, err_t *err)
{
    if (n < 0 || n > max)
        return err_set(err, ERR_RANGE, "samdec_forward: %d prompt points (allowed 0..%d)", n,
                       max);
    if (n > 0 && !pts) return err_set(err, ERR_INVALID, "samdec_forward: points are NULL");
    for (int i = 0; i < n; i++) {
        float l = pts[i].label;
        if (!(l == -1.0f || l == 0.0f || l == 1.0f || l == 2.0f || l == 3.0f))
            return err_set(err, ERR_INVALID,
                           "samdec_forward: point %d has label %g (allowed -1, 0, 1, 2, 3)", i,
                           (double)l);
        if (!isfinite(pts[i].x) || !isfinite(pts[i].y))
            return err_set(err, ERR_INVALID, "samdec_forward: point %d is not finite", i);
    }
    return 0;
}

int samdec_forward(samdec_t *d, const float *emb, const sam_point_t *pts, int n,
                   const float *mask_in, float *lowres, float iou[SAM_NMASK], err_t *err)
{
    return samdec_forward_ex(d, emb, pts, n, mask_in, lowres, iou, NULL, err);
}

int samdec_forward_ex(samdec_t *d, const float *emb, const sam_point_t *pts, int n,
                      const float *mask_in, float *lowres, float iou[SAM_NMASK],
                      const samdec_extra_t *x, err_t *err)
{
    if (!d || !emb || !lowres || !iou)
        return err_set(err, ERR_INVALID, "samdec_forward: NULL argument");
    int rc = samdec_check_points(pts, n, MAX_POINTS, err);
    if (rc < 0) return rc;
    int nt = 5 + n;
    const int H = x && x->hq_token ? 1 : 0; /* the one-way hq token, row nt */
    if (H && !x->hq_out) return err_set(err, ERR_INVALID, "samdec_forward_ex: hq_out is NULL");
    const int nq = nt + H; /* query rows of the token-side computations */
    samdec_trace_t *tr = H ? x->trace : NULL;
    if (tr) {
        tr->valid = 0;
        if ((rc = trace_reserve(tr, nt, err)) < 0) return rc;
    }
    if ((rc = ensure_tokens(d, nq, err)) < 0) return rc;

    /* sparse prompt: tokens t0 = [iou token, mask tokens, point embeddings] */
    samdec_prompt_tokens(&d->pw, pts, n, d->t0);
    if (H) memcpy(d->t0 + (size_t)nt * C, x->hq_token, sizeof(float) * C);

    float *keys = d->keys, *kp = d->kp, *Q = d->q, *T0 = d->t0;
    memcpy(Q, T0, sizeof(float) * nq * C);
    int first = 0;
    int same = !mask_in && d->c_state > 0 &&
               memcmp(d->c_emb, emb, sizeof(float) * NP * C) == 0;
    if (!mask_in && !same) {
        /* first prompt on this embedding: remember it, run layer 0 re-associated (cheaper
         * than filling the projections when no second prompt follows) */
        cache_src(d, emb);
        memcpy(keys, d->c_keys, sizeof(float) * NP * C);
    } else if (!mask_in) {
        /* layer 0 from the per-embedding cache */
        if (d->c_state == 1) cache_proj(d);
        const layer_w_t *L = &d->L[0];
        self_attn(d, &L->self, Q, Q, d->tmp, nq, nt);
        if (tr) rec_self(tr, 0, d, nt, Q + (size_t)nt * C, d->tmp + (size_t)nt * C);
        tok_layernorm(Q, d->tmp, &L->n1, nq);
        add_rows(d->tmp, Q, T0, nq);
        kn_linear_fwd(d->qp, d->tmp, L->t2i.qw, L->t2i.qb, nq, C, XDIM);
        /* plain attention on the cached k, v: logits [8, nq, 4096], one softmax call */
        for (int h = 0; h < HEADS; h++)
            kn_gemm(0, 1, nq, NP, XD, 0.25f, d->qp + h * XD, XDIM, d->c_k + h * XD, XDIM, 0.0f,
                    d->big + (size_t)h * nq * NP, NP);
        kn_softmax_fast_fwd(d->big, d->big, HEADS * nq, NP);
        for (int h = 0; h < HEADS; h++)
            kn_gemm(0, 0, nq, XD, NP, 1.0f, d->big + (size_t)h * nq * NP, NP, d->c_v + h * XD,
                    XDIM, 0.0f, d->att + h * XD, XDIM);
        if (tr) rec_attn(&tr->L[0].ca, d, nq, nt, NULL, d->c_keys);
        kn_linear_fwd(d->tmp, d->att, L->t2i.ow, L->t2i.ob, nq, XDIM, C);
        add_rows(Q, Q, d->tmp, nq);
        if (tr) rec_row(tr->L[0].ca_pre, Q, nt);
        tok_layernorm(Q, Q, &L->n2, nq);
        if (tr) rec_row(tr->L[0].x2, Q, nt);
        kn_linear_fwd(d->mlp, Q, L->l1w, L->l1b, nq, C, MLP_DIM);
        kn_relu_fwd(d->mlp, d->mlp, (size_t)nq * MLP_DIM);
        if (tr) memcpy(tr->L[0].h, d->mlp + (size_t)nt * MLP_DIM, sizeof(float) * MLP_DIM);
        kn_linear_fwd(d->tmp, d->mlp, L->l2w, L->l2b, nq, MLP_DIM, C);
        add_rows(Q, Q, d->tmp, nq);
        if (tr) rec_row(tr->L[0].mlp_pre, Q, nt);
        tok_layernorm(Q, Q, &L->n3, nq);
        add_rows(d->tmp, Q, T0, nt);
        const attn_w_t *a = &L->i2t;
        kn_linear_fwd(d->kt, d->tmp, a->kw, a->kb, nt, C, XDIM);
        kn_linear_fwd(d->vt, Q, a->vw, a->vb, nt, C, XDIM);
        for (int h = 0; h < HEADS; h++) /* logits on the cached q: rows j*8+h of [R, 4096] */
            kn_gemm(0, 1, nt, NP, XD, 0.25f, d->kt + h * XD, XDIM, d->c_q + h * XD, XDIM, 0.0f,
                    d->big + (size_t)h * NP, HEADS * NP);
        memcpy(keys, d->c_keys, sizeof(float) * NP * C);
        i2t_finish(d, a, d->big, keys, nt);
        kn_layernorm_add_fast_fwd(keys, kp, d->pe, keys, L->n4.w, L->n4.b, NP, C, LN_EPS);
        first = 1;
    } else {
        /* src = emb + dense(mask), token-major */
        float *dense = d->y2;
        embed_mask(d, mask_in, dense);
        kn_add(dense, emb, dense, (size_t)NP * C);
        kn_transpose(keys, dense, C, NP);
    }

    for (int l = first; l < 2; l++) {
        const layer_w_t *L = &d->L[l];
        if (l == 0) {
            self_attn(d, &L->self, Q, Q, d->tmp, nq, nt);
            if (tr) rec_self(tr, 0, d, nt, Q + (size_t)nt * C, d->tmp + (size_t)nt * C);
            tok_layernorm(Q, d->tmp, &L->n1, nq);
        } else {
            add_rows(d->tmp2, Q, T0, nq);
            self_attn(d, &L->self, d->tmp2, Q, d->tmp, nq, nt);
            if (tr) memcpy(tr->L[l].x_in, Q + (size_t)nt * C, sizeof(float) * C);
            add_rows(Q, Q, d->tmp, nq);
            if (tr) rec_self(tr, l, d, nt, tr->L[l].x_in, Q + (size_t)nt * C);
            tok_layernorm(Q, Q, &L->n1, nq);
        }
        if (l == 0 && first == 0) kn_add(kp, keys, d->pe, (size_t)NP * C); /* else: by LN4 */
        add_rows(d->tmp2, Q, T0, nq);
        t2i(d, &L->t2i, d->tmp2, kp, keys, d->tmp, nq);
        if (tr) rec_attn(&tr->L[l].ca, d, nq, nt, kp, keys);
        add_rows(Q, Q, d->tmp, nq);
        if (tr) rec_row(tr->L[l].ca_pre, Q, nt);
        tok_layernorm(Q, Q, &L->n2, nq);
        if (tr) rec_row(tr->L[l].x2, Q, nt);
        kn_linear_fwd(d->mlp, Q, L->l1w, L->l1b, nq, C, MLP_DIM);
        kn_relu_fwd(d->mlp, d->mlp, (size_t)nq * MLP_DIM);
        if (tr) memcpy(tr->L[l].h, d->mlp + (size_t)nt * MLP_DIM, sizeof(float) * MLP_DIM);
        kn_linear_fwd(d->tmp, d->mlp, L->l2w, L->l2b, nq, MLP_DIM, C);
        add_rows(Q, Q, d->tmp, nq);
        if (tr) rec_row(tr->L[l].mlp_pre, Q, nt);
        tok_layernorm(Q, Q, &L->n3, nq);
        add_rows(d->tmp2, Q, T0, nt);
        i2t(d, &L->i2t, kp, d->tmp2, Q, keys, nt);
        /* norm4, and kp = keys + pe for the next attention in the same pass */
        kn_layernorm_add_fast_fwd(keys, kp, d->pe, keys, L->n4.w, L->n4.b, NP, C, LN_EPS);
    }
    /* final tokens→image attention: only the iou and mask tokens (rows 0..4) are read
     * afterwards, and attention rows are independent, so the prompt rows are skipped */
    const int nout = 1 + SAM_NMASK;
    add_rows(d->tmp2, Q, T0, nout);
    if (H) /* the hq row goes to row nout of the final attention */
        add_rows(d->tmp2 + (size_t)nout * C, Q + (size_t)nt * C, T0 + (size_t)nt * C, 1);
    t2i(d, &d->fin, d->tmp2, kp, keys, d->tmp, nout + H);
    if (H) {
        float *hq = d->tmp + (size_t)nout * C; /* Q_hq + attention output: the norm input */
        if (tr) rec_attn(&tr->fin, d, nout + H, nout, kp, keys);
        add_rows(hq, Q + (size_t)nt * C, hq, 1);
        if (tr) memcpy(tr->fin_pre, hq, sizeof(float) * C);
        tok_layernorm(x->hq_out, hq, &d->nfin, 1);
        if (tr) tr->valid = 1;
    }
    add_rows(Q, Q, d->tmp, nout);
    tok_layernorm(Q, Q, &d->nfin, nout);

    /* heads: iou from token 0, hyper vectors from tokens 1..4 */
    float *h1 = d->tmp, *h2 = d->tmp + C, *hyper = d->tmp2; /* hyper [4,32] */
    mlp3(&d->iouh, Q, h1, h2, iou, SAM_NMASK);
    for (int i = 0; i < SAM_NMASK; i++)
        mlp3(&d->hyper[i], Q + (size_t)(1 + i) * C, h1, h2, hyper + i * HYP, HYP);

    /* upscaling. convT1 as a Linear: y1 rows (p, s) are its output pixels, 64 channels
     * each; convT2 channel-major: y2t[(s2, co), (p, s)]; then per s2 the hypernetwork
     * product over co, out[m, (p, s)] = Σ_co hyper[m, co] gelu(y2t[(s2, co), (p, s)] + b) */
    float *y1 = kp; /* [4096, 4*64] = [16384, 64] */
    kn_linear_fwd(y1, keys, d->up0t, d->up0bt, NP, C, 256);
    kn_layernorm_gelu_fast_fwd(y1, y1, d->up1w, d->up1b, 4 * NP, 64, LN2D_EPS);
    /* convT2 + GELU + hypernetwork product in column blocks, so each [128, UPB] block of
     * convT2 output is consumed while it is still in cache */
    const size_t plane = (size_t)SAM_LOWRES * SAM_LOWRES;
    for (int c0 = 0; c0 < 4 * NP; c0 += UPB) {
        float *y2t = d->y2; /* [4*32, UPB]: rows (s2, co), columns (p, s) */
        kn_gemm(0, 1, 4 * HYP, UPB, 64, 1.0f, d->up3t, 64, y1 + (size_t)c0 * 64, 64, 0.0f, y2t,
                UPB);
        if (x && x->up) upscaled_block(x->up, y2t, d->up3b, c0);
        kn_gelu_linear_fwd(d->rm, y2t, d->up3b, hyper, 4, HYP, UPB, SAM_NMASK); /* [s2][m][c] */
        /* column c0+c = p*4 + s of block s2 -> pixel (4i + 2dy + ey, 4j + 2dx + ex) with
         * p = i*64+j, s = dy*2+dx, s2 = ey*2+ex */
        for (int m = 0; m < SAM_NMASK; m++)
            for (int s2 = 0; s2 < 4; s2++) {
                const float *o = d->rm + ((size_t)s2 * SAM_NMASK + m) * UPB;
                float *dst = lowres + m * plane;
                for (int c = 0; c < UPB; c++) {
                    int r = c0 + c, p = r >> 2, s = r & 3;
                    int py = 4 * (p / SAM_EMB) + 2 * (s >> 1) + (s2 >> 1);
                    int px = 4 * (p % SAM_EMB) + 2 * (s & 1) + (s2 & 1);
                    dst[(size_t)py * SAM_LOWRES + px] = o[c];
                }
            }
    }
    if (x && x->up) kn_gelu_fast_fwd(x->up, x->up, (size_t)HYP * plane);
    return 0;
}

/* ---- MoDA hq token: backward ------------------------------------------------------------ */

/* Row LayerNorm backward for one row (statistics recomputed as the forward does). */
static void ln_row_bwd(float *dx, const float *dy, const float *x, const ln_w_t *n)
{
    float y[C], mean, rstd;
    kn_layernorm_fwd(y, &mean, &rstd, x, n->w, n->b, 1, C, LN_EPS);
    kn_layernorm_bwd(dx, NULL, NULL, dy, x, &mean, &rstd, n->w, 1, C);
}

/* d out[256] of a token→image attention -> d qin[256] (re-associated, file header). */
static void t2i_bwd(const attn_w_t *a, const tr_attn_t *r, const float *dout, float *dqin,
                    float *scratch)
{
    float datt[XDIM], dq[XDIM], dO[HEADS * C], dbt[HEADS * C];
    float *dP = scratch, *dl = scratch + (size_t)HEADS * NP; /* [HEADS, NP] each */
    kn_linear_bwd(datt, NULL, NULL, dout, r->att, a->ow, 1, XDIM, C);
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 0, 1, C, XD, 1.0f, datt + h * XD, XD, a->vw + (size_t)h * XD * C, C, 0.0f,
                dO + h * C, C);
    /* all heads in one pass over the 4096 image tokens: dP = dO · imgᵀ, then
     * dbt = dl · kp (two GEMMs instead of 2·HEADS matrix-vector loops) */
    kn_gemm(0, 1, HEADS, NP, C, 1.0f, dO, C, r->img, C, 0.0f, dP, NP);
    for (int h = 0; h < HEADS; h++)
        kn_softmax_bwd(dl + (size_t)h * NP, dP + (size_t)h * NP, r->P + (size_t)h * NP, 1, NP);
    kn_gemm(0, 0, HEADS, C, NP, 1.0f, dl, NP, r->kp, C, 0.0f, dbt, C);
    for (int h = 0; h < HEADS; h++)
        kn_gemm(0, 1, 1, XD, C, 0.25f, dbt + h * C, C, a->kw + (size_t)h * XD * C, C, 0.0f,
                dq + h * XD, XD);
    kn_linear_bwd(dqin, NULL, NULL, dq, r->q, a->qw, 1, C, XDIM);
}

/* d out[256] of the self-attention (hq row) -> d qin[256]; keys/values are constants. */
static void self_bwd(const attn_w_t *a, const tr_layer_t *t, int nk, const float *dout,
                     float *dqin, float *scratch)
{
    float datt[C], dq[C];
    int dh = C / HEADS;
    kn_linear_bwd(datt, NULL, NULL, dout, t->satt, a->ow, 1, C, C);
    kn_attention_bwd(dq, NULL, NULL, datt, t->sq, C, t->sk, C, t->sv, C, NULL, HEADS, 1, nk, dh,
                     1.0f / sqrtf((float)dh), scratch);
    kn_linear_bwd(dqin, NULL, NULL, dq, t->sq, a->qw, 1, C, C);
}

int samdec_hq_backward(const samdec_t *d, const samdec_trace_t *t, const float *d_hq_out,
                       float *d_hq_token, err_t *err)
{
    if (!d || !t || !d_hq_out || !d_hq_token)
        return err_set(err, ERR_INVALID, "samdec_hq_backward: NULL argument");
    if (!t->valid)
        return err_set(err, ERR_STATE, "samdec_hq_backward: no hq forward recorded");
    if (kn_attention_bwd_scratch(1, t->nk) > t->scratch_n - 2 * (size_t)HEADS * NP)
        return err_set(err, ERR_RANGE, "samdec_hq_backward: %d tokens", t->nk);
    float *scr = t->scratch, *ascr = t->scratch + 2 * (size_t)HEADS * NP;
    float g[C], dpre[C], dq[C], dtok[C], dh[MLP_DIM], dm[C];
    /* final attention: fin_pre = x + t2i(x + tok); out = norm_final(fin_pre) */
    ln_row_bwd(dpre, d_hq_out, t->fin_pre, &d->nfin);
    t2i_bwd(&d->fin, &t->fin, dpre, dq, scr);
    for (int c = 0; c < C; c++) {
        g[c] = dpre[c] + dq[c];
        dtok[c] = dq[c];
    }
    for (int l = 1; l >= 0; l--) {
        const layer_w_t *L = &d->L[l];
        const tr_layer_t *tl = &t->L[l];
        /* norm3(x2 + mlp(x2)) */
        ln_row_bwd(dpre, g, tl->mlp_pre, &L->n3);
        kn_linear_bwd(dh, NULL, NULL, dpre, tl->h, L->l2w, 1, MLP_DIM, C);
        kn_relu_bwd(dh, dh, tl->h, MLP_DIM);
        kn_linear_bwd(dm, NULL, NULL, dh, tl->x2, L->l1w, 1, C, MLP_DIM);
        for (int c = 0; c < C; c++) g[c] = dpre[c] + dm[c];
        /* norm2(x1 + t2i(x1 + tok)) */
        ln_row_bwd(dpre, g, tl->ca_pre, &L->n2);
        t2i_bwd(&L->t2i, &tl->ca, dpre, dq, scr);
        for (int c = 0; c < C; c++) {
            g[c] = dpre[c] + dq[c];
            dtok[c] += dq[c];
        }
        /* layer 1: norm1(x_in + self(x_in + tok)); layer 0: norm1(self(tok)) */
        ln_row_bwd(dpre, g, tl->sa_pre, &L->n1);
        self_bwd(&L->self, tl, t->nk, dpre, dq, ascr);
        for (int c = 0; c < C; c++) {
            dtok[c] += dq[c];
            g[c] = dpre[c] + dq[c];
        }
    }
    memcpy(d_hq_token, dtok, sizeof(float) * C);
    return 0;
}
