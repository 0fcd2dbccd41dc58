/* sam_vit.c — official SAM ViT-B/L/H image encoder on kn_* ops (MODEL.md "ViT-B/L/H").
 *
 * patch conv 16×16 s16 -> + pos_embed -> blocks -> neck. Block: x += proj(attn(LN1(x)))
 * with windowed (14, LN output zero-padded 64->70, pad tokens unmasked) or global
 * attention, decomposed rel-pos on the unscaled q; x += lin2(GELU(lin1(LN2(x)))).
 * Shapes come from the weights: C from patch_embed, depth from the block count, head dim
 * from rel_pos_h's width, window size (and global-ness) from rel_pos_h's length 2S−1, so
 * B, L, H and small test configurations share this code. Only tables of exactly 2S−1 rows
 * are supported (the official code would interpolate other lengths; we refuse them).
 * Shapes and weights are read by vit_weights_get (shared with the GPU encoder, vit_cuda.c).
 * The vit_t borrows the wts_t; activations live in one arena allocated at vit_new. The
 * four linear layers of every block run on panel-packed copies of their weights
 * (kn_linear_pk_fwd: fused bias, GELU and residual), made once at vit_new: that doubles
 * the weight memory (ViT-B +340 MB, ViT-H +2.5 GB) for a ~2x faster forward.
 */
#include "sam_vit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

#define PATCH 16
#define GRID SAM_EMB /* 64 tokens per side */
#define LN_EPS 1e-6f

typedef struct vpack {
    float *qkv, *proj, *l1, *l2; /* kn_pack_w copies (owned by the vit_t) */
} vpack_t;

struct vit {
    vit_weights_t wt; /* info, borrowed weight pointers, per-block window sides */
    vit_info_t info;  /* = wt.info */
    vpack_t *pk;      /* [depth] */
    /* arena */
    float *mem;
    float *x, *win, *qkv, *att, *hid, *col, *ascr;
    size_t win_n, ascr_n;
    int ascr_threads;
};

static const float *get(const wts_t *w, err_t *err, const char *fmt, int i, int ndim, int64_t d0,
                        int64_t d1, int64_t d2, int64_t d3)
{
    char name[128];
    snprintf(name, sizeof name, fmt, i);
    switch (ndim) {
    case 1: return wts_f32(w, name, err, 1, (int)d0);
    case 2: return wts_f32(w, name, err, 2, (int)d0, (int)d1);
    case 3: return wts_f32(w, name, err, 3, (int)d0, (int)d1, (int)d2);
    default: return wts_f32(w, name, err, 4, (int)d0, (int)d1, (int)d2, (int)d3);
    }
}

#define GET1(fmt, i, a) get(w, err, fmt, i, 1, a, 0, 0, 0)
#define GET2(fmt, i, a, b) get(w, err, fmt, i, 2, a, b, 0, 0)

static int load_block(const wts_t *w, vit_weights_t *vw, int i, err_t *err)
{
    vit_block_w_t *b = &vw->blk[i];
    int C = vw->info.embed_dim;
    char name[128];
    snprintf(name, sizeof name, "image_encoder.blocks.%d.attn.rel_pos_h", i);
    const wts_tensor_t *t = wts_find(w, name);
    if (!t) return err_set(err, ERR_NOTFOUND, "vit: missing tensor '%s' (use_rel_pos is required)", name);
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[0] % 2 == 0 || t->shape[1] < 1 || t->shape[1] > C)
        return err_set(err, ERR_FORMAT, "vit: '%s' should be [2S-1, head_dim]", name);
    int hd = (int)t->shape[1], S = (int)(t->shape[0] + 1) / 2;
    if (i == 0) vw->info.head_dim = hd;
    if (hd != vw->info.head_dim || C % hd != 0)
        return err_set(err, ERR_FORMAT, "vit: '%s' head dim %d does not divide C=%d or differs from block 0", name, hd, C);
    if (S > GRID)
        return err_set(err, ERR_UNSUPPORTED, "vit: '%s' has %lld rows; only 2S-1 rows with S <= 64 are supported "
                       "(the official code would interpolate)", name, (long long)t->shape[0]);
    b->S = S;
    b->nwin = (GRID + S - 1) / S;
    int M = vw->info.mlp_dim;
    if (!(b->n1w = GET1("image_encoder.blocks.%d.norm1.weight", i, C)) ||
        !(b->n1b = GET1("image_encoder.blocks.%d.norm1.bias", i, C)) ||
        !(b->qkvw = GET2("image_encoder.blocks.%d.attn.qkv.weight", i, 3 * C, C)) ||
        !(b->qkvb = GET1("image_encoder.blocks.%d.attn.qkv.bias", i, 3 * C)) ||
        !(b->projw = GET2("image_encoder.blocks.%d.attn.proj.weight", i, C, C)) ||
        !(b->projb = GET1("image_encoder.blocks.%d.attn.proj.bias", i, C)) ||
        !(b->rph = GET2("image_encoder.blocks.%d.attn.rel_pos_h", i, 2 * S - 1, hd)) ||
        !(b->rpw = GET2("image_encoder.blocks.%d.attn.rel_pos_w", i, 2 * S - 1, hd)) ||
        !(b->n2w = GET1("image_encoder.blocks.%d.norm2.weight", i, C)) ||
        !(b->n2b = GET1("image_encoder.blocks.%d.norm2.bias", i, C)) ||
        !(b->l1w = GET2("image_encoder.blocks.%d.mlp.lin1.weight", i, M, C)) ||
        !(b->l1b = GET1("image_encoder.blocks.%d.mlp.lin1.bias", i, M)) ||
        !(b->l2w = GET2("image_encoder.blocks.%d.mlp.lin2.weight", i, C, M)) ||
        !(b->l2b = GET1("image_encoder.blocks.%d.mlp.lin2.bias", i, C)))
        return err ? err->code : ERR_FORMAT;
    if (S == GRID) {
        if (i < 64) vw->info.global_mask |= 1ull << i;
        if (vw->info.first_global < 0) vw->info.first_global = i;
    }
    return 0;
}

int vit_weights_get(const wts_t *w, vit_weights_t *vw, err_t *err)
{
    memset(vw, 0, sizeof *vw);
    if (!w) return err_set(err, ERR_INVALID, "vit: no weights");
    const wts_tensor_t *pe = wts_find(w, "image_encoder.patch_embed.proj.weight");
    if (!pe || pe->ndim != 4 || pe->shape[1] != 3 || pe->shape[2] != PATCH || pe->shape[3] != PATCH ||
        pe->shape[0] < 1 || pe->shape[0] > 8192)
        return err_set(err, pe ? ERR_FORMAT : ERR_NOTFOUND,
                       "vit: image_encoder.patch_embed.proj.weight %s (expected [C,3,16,16])",
                       pe ? "has a bad shape" : "missing");
    vit_info_t *in = &vw->info;
    int C = (int)pe->shape[0];
    in->embed_dim = C;
    in->first_global = -1;
    char name[128];
    while (in->depth < 1000) {
        snprintf(name, sizeof name, "image_encoder.blocks.%d.norm1.weight", in->depth);
        if (!wts_find(w, name)) break;
        in->depth++;
    }
    const wts_tensor_t *l1 = wts_find(w, "image_encoder.blocks.0.mlp.lin1.weight");
    int rc = 0;
    if (in->depth == 0 || !l1 || l1->ndim != 2 || l1->shape[0] < 1 || l1->shape[0] > 16 * C) {
        rc = err_set(err, ERR_FORMAT, "vit: no usable image_encoder.blocks.0 (norm1 / mlp.lin1.weight)");
        goto fail;
    }
    in->mlp_dim = (int)l1->shape[0];
    vw->blk = calloc((size_t)in->depth, sizeof *vw->blk);
    if (!vw->blk) { rc = err_set(err, ERR_NOMEM, "vit: out of memory"); goto fail; }
    if (!(vw->pw = wts_f32(w, "image_encoder.patch_embed.proj.weight", err, 4, C, 3, PATCH, PATCH)) ||
        !(vw->pb = wts_f32(w, "image_encoder.patch_embed.proj.bias", err, 1, C)) ||
        !(vw->pos = wts_f32(w, "image_encoder.pos_embed", err, 4, 1, GRID, GRID, C)) ||
        !(vw->neck0 = wts_f32(w, "image_encoder.neck.0.weight", err, 4, SAM_EMB_C, C, 1, 1)) ||
        !(vw->neck1w = wts_f32(w, "image_encoder.neck.1.weight", err, 1, SAM_EMB_C)) ||
        !(vw->neck1b = wts_f32(w, "image_encoder.neck.1.bias", err, 1, SAM_EMB_C)) ||
        !(vw->neck2 = wts_f32(w, "image_encoder.neck.2.weight", err, 4, SAM_EMB_C, SAM_EMB_C, 3, 3)) ||
        !(vw->neck3w = wts_f32(w, "image_encoder.neck.3.weight", err, 1, SAM_EMB_C)) ||
        !(vw->neck3b = wts_f32(w, "image_encoder.neck.3.bias", err, 1, SAM_EMB_C))) {
        rc = err ? err->code : ERR_FORMAT;
        goto fail;
    }
    for (int i = 0; i < in->depth; i++)
        if ((rc = load_block(w, vw, i, err)) < 0) goto fail;
    in->heads = C / in->head_dim;
    if (in->first_global < 0) in->first_global = in->depth - 1;
    return 0;
fail:
    vit_weights_free(vw);
    return rc < 0 ? rc : ERR_FORMAT;
}

void vit_weights_free(vit_weights_t *vw)
{
    if (!vw) return;
    free(vw->blk);
    memset(vw, 0, sizeof *vw);
}

vit_t *vit_new(const wts_t *w, err_t *err)
{
    vit_t *v = calloc(1, sizeof *v);
    if (!v) { err_set(err, ERR_NOMEM, "vit: out of memory"); return NULL; }
    if (vit_weights_get(w, &v->wt, err) < 0) goto fail;
    v->info = v->wt.info;
    int C = v->info.embed_dim, M = v->info.mlp_dim;
    v->pk = calloc((size_t)v->info.depth, sizeof *v->pk);
    if (!v->pk) { err_set(err, ERR_NOMEM, "vit: out of memory"); goto fail; }
    size_t win_n = VIT_TOKENS;
    for (int i = 0; i < v->info.depth; i++) {
        const vit_block_w_t *b = &v->wt.blk[i];
        struct { float **dst; const float *w; int n, k; } pk[4] = {
            {&v->pk[i].qkv, b->qkvw, 3 * C, C}, {&v->pk[i].proj, b->projw, C, C},
            {&v->pk[i].l1, b->l1w, M, C}, {&v->pk[i].l2, b->l2w, C, M}};
        for (int j = 0; j < 4; j++) {
            size_t n = kn_pack_size(pk[j].n, pk[j].k) * sizeof(float);
            *pk[j].dst = aligned_alloc(64, (n + 63) / 64 * 64);
            if (!*pk[j].dst) { err_set(err, ERR_NOMEM, "vit: out of memory packing block %d weights", i); goto fail; }
            kn_pack_w(*pk[j].dst, pk[j].w, pk[j].n, pk[j].k);
        }
        size_t n = (size_t)b->nwin * b->nwin * b->S * b->S;
        if (n > win_n) win_n = n;
    }
    v->win_n = win_n;
    size_t col = (size_t)3 * PATCH * PATCH * VIT_TOKENS;
    size_t col3 = (size_t)SAM_EMB_C * 9 * VIT_TOKENS;
    if (col3 > col) col = col3;
    size_t total = (size_t)VIT_TOKENS * C + win_n * C * 5 + (size_t)VIT_TOKENS * v->info.mlp_dim + col;
    v->mem = malloc(total * sizeof(float));
    if (!v->mem) { err_set(err, ERR_NOMEM, "vit: out of memory for %zu activation floats", total); goto fail; }
    v->x = v->mem;
    v->win = v->x + (size_t)VIT_TOKENS * C;
    v->qkv = v->win + win_n * C;
    v->att = v->qkv + win_n * 3 * C;
    v->hid = v->att + win_n * C;
    v->col = v->hid + (size_t)VIT_TOKENS * v->info.mlp_dim;
    return v;
fail:
    vit_destroy(&v);
    return NULL;
}

void vit_destroy(vit_t **pv)
{
    if (!pv || !*pv) return;
    vit_t *v = *pv;
    free(v->mem);
    free(v->ascr);
    for (int i = 0; v->pk && i < v->info.depth; i++) {
        free(v->pk[i].qkv);
        free(v->pk[i].proj);
        free(v->pk[i].l1);
        free(v->pk[i].l2);
    }
    free(v->pk);
    vit_weights_free(&v->wt);
    free(v);
    *pv = NULL;
}

int vit_early_channels(const vit_t *v) { return v ? v->info.embed_dim : 0; }

void vit_get_info(const vit_t *v, vit_info_t *info) { *info = v->info; }

int vit_embed(vit_t *v, const float *img, float *x, err_t *err)
{
    (void)err;
    int C = v->info.embed_dim;
    float *y = v->att; /* [C, 4096], att holds >= 4096*C floats */
    kn_conv2d_fwd(y, img, v->wt.pw, v->wt.pb, 3, SAM_IMG, SAM_IMG, C, PATCH, PATCH, 0, 1, v->col);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < VIT_TOKENS; t++)
        for (int c = 0; c < C; c++)
            x[(size_t)t * C + c] = y[(size_t)c * VIT_TOKENS + t] + v->wt.pos[(size_t)t * C + c];
    return 0;
}

static int ensure_scratch(vit_t *v, err_t *err)
{
    int th = kn_get_threads();
    size_t n = 0;
    for (int i = 0; i < v->info.depth; i++) {
        const vit_block_w_t *b = &v->wt.blk[i];
        size_t m = kn_relpos_attention_scratch(b->nwin * b->nwin, b->S, v->info.heads, v->info.head_dim, th);
        if (m > n) n = m;
    }
    v->ascr_threads = th;
    if (v->ascr && n <= v->ascr_n) return 0;
    free(v->ascr);
    v->ascr = malloc(n * sizeof(float));
    v->ascr_n = v->ascr ? n : 0;
    if (!v->ascr) return err_set(err, ERR_NOMEM, "vit: out of memory for attention scratch");
    return 0;
}

int vit_block(vit_t *v, int i, float *x, err_t *err)
{
    if (i < 0 || i >= v->info.depth) return err_set(err, ERR_RANGE, "vit: block %d out of range", i);
    int rc = ensure_scratch(v, err);
    if (rc < 0) return rc;
    const vit_block_w_t *b = &v->wt.blk[i];
    const vpack_t *pk = &v->pk[i];
    int C = v->info.embed_dim, S = b->S, nw = b->nwin, M = v->info.mlp_dim;
    int Np = nw * nw * S * S;
    float *xn = v->att; /* LN1 output in grid order */
    kn_layernorm_fwd(xn, NULL, NULL, x, b->n1w, b->n1b, VIT_TOKENS, C, LN_EPS);
    float *win = v->win;
    if (S == GRID) win = xn;
    else kn_window_partition(win, xn, GRID, GRID, C, S); /* pad tokens are zeros */
    kn_linear_pk_fwd(v->qkv, 3 * C, win, C, pk->qkv, b->qkvb, NULL, 0, Np, 3 * C, C, KN_ACT_NONE);
    int hd = v->info.head_dim;
    kn_relpos_attention_fwd(v->att, v->qkv, b->rph, b->rpw, nw * nw, S, v->info.heads, hd,
                            1.0f / sqrtf((float)hd), v->ascr, v->ascr_threads);
    if (S == GRID) { /* window order is grid order: fuse the residual */
        kn_linear_pk_fwd(x, C, v->att, C, pk->proj, b->projb, x, C, Np, C, C, KN_ACT_NONE);
    } else {
        float *y = v->win; /* proj output, window order */
        kn_linear_pk_fwd(y, C, v->att, C, pk->proj, b->projb, NULL, 0, Np, C, C, KN_ACT_NONE);
        kn_window_unpartition_add(x, y, GRID, GRID, C, S);
    }
    /* MLP: x += lin2(GELU(lin1(LN2(x)))) */
    kn_layernorm_fwd(v->att, NULL, NULL, x, b->n2w, b->n2b, VIT_TOKENS, C, LN_EPS);
    kn_linear_pk_fwd(v->hid, M, v->att, C, pk->l1, b->l1b, NULL, 0, VIT_TOKENS, M, C, KN_ACT_GELU);
    kn_linear_pk_fwd(x, C, v->hid, M, pk->l2, b->l2b, x, C, VIT_TOKENS, C, M, KN_ACT_NONE);
    return 0;
}

int vit_neck(vit_t *v, const float *x, float *emb, err_t *err)
{
    (void)err;
    int C = v->info.embed_dim;
    float *n1 = v->att; /* [256, 4096] */
    /* conv 1×1 without bias on tokens: n1[o, t] = Σc W[o, c] x[t, c] */
    kn_gemm(0, 1, SAM_EMB_C, VIT_TOKENS, C, 1.0f, v->wt.neck0, C, x, C, 0.0f, n1, VIT_TOKENS);
    kn_layernorm2d_fwd(n1, n1, v->wt.neck1w, v->wt.neck1b, SAM_EMB_C, VIT_TOKENS, LN_EPS);
    kn_conv2d_fwd(emb, n1, v->wt.neck2, NULL, SAM_EMB_C, GRID, GRID, SAM_EMB_C, 3, 1, 1, 1, v->col);
    kn_layernorm2d_fwd(emb, emb, v->wt.neck3w, v->wt.neck3b, SAM_EMB_C, VIT_TOKENS, LN_EPS);
    return 0;
}

int vit_forward(vit_t *v, const float *x, float *emb, float *early, err_t *err)
{
    if (!v || !x || !emb) return err_set(err, ERR_INVALID, "vit_forward: NULL argument");
    int rc = vit_embed(v, x, v->x, err);
    int C = v->info.embed_dim;
    for (int i = 0; rc == 0 && i < v->info.depth; i++) {
        rc = vit_block(v, i, v->x, err);
        if (rc == 0 && early && i == v->info.first_global)
            kn_transpose(early, v->x, VIT_TOKENS, C);
    }
    if (rc == 0) rc = vit_neck(v, v->x, emb, err);
    return rc;
}
