/* vit_cuda.c — ViT-B/L/H encoder on the GPU from kcu_ ops (vit_cuda.h). The layer order and
 * every constant follow sam_vit.c (the CPU encoder this must match), and the weights and
 * configuration come from the same vit_weights_get. Layouts: the 16×16 patch conv runs NCHW
 * on cuDNN, then one transpose to token-major X[B·4096, C] (+ pos_embed per image); linears
 * are cuBLAS GEMMs with fused bias / residual / GELU (kcu_linear_ex on PyTorch [N, K]
 * weights). Windowed blocks partition the LayerNorm output into 14×14 windows (64 → 70 with
 * zero pad tokens, kcu_window_partition; the B images' windows one after another) and add
 * the projected windows back (kcu_window_unpartition_add); global blocks attend over the
 * whole grid in place and fuse the residual into the projection. The neck is a linear
 * (1×1 conv), LayerNorm over channels, a channel-last 3×3 conv, LayerNorm, transpose to
 * [B, 256, 4096].
 *
 * Buffers per image (floats): X 4096·C tokens; A max(Np·C, 4096·256) (LayerNorm outputs,
 * attention outputs, neck); Wb the same (windows, projections, neck conv); H
 * max(4096·mlp, Np·3C) (qkv, MLP hidden); Np = the most tokens any block attends over
 * (4900 with 14×14 windows).
 */
#include "vit_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(MODA_HAVE_CUDA)

#include "kn_cuda.h"
#include "sam_vit.h"

#define GRID SAM_EMB
#define LN_EPS 1e-6f

typedef struct {
    const float *n1w, *n1b, *qkvw, *qkvb, *projw, *projb, *rph, *rpw;
    const float *n2w, *n2b, *l1w, *l1b, *l2w, *l2b;
} dblock_t; /* device copies of vit_block_w_t's tensors */

struct vit_cuda {
    kcu_ctx_t *ctx;
    vit_weights_t wt; /* host view: configuration and window sides (weights borrowed) */
    int max_batch;
    const float *pw, *pb, *pos, *neck0, *n1w, *n1b, *neck2, *n3w, *n3b;
    dblock_t *blk;
    size_t np_max; /* most tokens a block attends over, per image */
    float *in, *X, *A, *Wb, *H, *emb, *early; /* activations (arena, after the weights) */
};

/* Device copy of n host floats, or NULL + err. */
static const float *up(vit_cuda_t *e, const float *h, size_t n, const char *what, err_t *err)
{
    float *d = kcu_upload_new(e->ctx, h, n);
    if (!d) err_set(err, ERR_NOMEM, "vit_cuda: uploading %s: %s", what, kcu_errmsg(e->ctx));
    return d;
}

/* Floats of every uploaded tensor (for the arena size). */
static size_t weight_floats(const vit_weights_t *vw)
{
    const vit_info_t *in = &vw->info;
    size_t C = (size_t)in->embed_dim, M = (size_t)in->mlp_dim, hd = (size_t)in->head_dim;
    size_t n = C * 3 * 16 * 16 + C + (size_t)VIT_TOKENS * C + SAM_EMB_C * C +
               (size_t)SAM_EMB_C * SAM_EMB_C * 9 + 4 * SAM_EMB_C;
    for (int i = 0; i < in->depth; i++)
        n += 4 * C + 3 * C * C + 3 * C + C * C + C + 2 * (2 * (size_t)vw->blk[i].S - 1) * hd +
             M * C + M + C * M + C;
    return n;
}

static int load_all(vit_cuda_t *e, err_t *err)
{
    const vit_weights_t *vw = &e->wt;
    size_t C = (size_t)vw->info.embed_dim, M = (size_t)vw->info.mlp_dim;
    size_t hd = (size_t)vw->info.head_dim;
#define UP(dst, src, n)                                                                           \
    do {                                                                                          \
        if (!((dst) = up(e, (src), (n), #src, err))) return err->code;                           \
    } while (0)
    UP(e->pw, vw->pw, C * 3 * 16 * 16);
    UP(e->pb, vw->pb, C);
    UP(e->pos, vw->pos, (size_t)VIT_TOKENS * C);
    UP(e->neck0, vw->neck0, SAM_EMB_C * C);
    UP(e->n1w, vw->neck1w, SAM_EMB_C);
    UP(e->n1b, vw->neck1b, SAM_EMB_C);
    UP(e->neck2, vw->neck2, (size_t)SAM_EMB_C * SAM_EMB_C * 9);
    UP(e->n3w, vw->neck3w, SAM_EMB_C);
    UP(e->n3b, vw->neck3b, SAM_EMB_C);
    for (int i = 0; i < vw->info.depth; i++) {
        const vit_block_w_t *h = &vw->blk[i];
        dblock_t *d = &e->blk[i];
        size_t R = (2 * (size_t)h->S - 1) * hd;
        UP(d->n1w, h->n1w, C);
        UP(d->n1b, h->n1b, C);
        UP(d->qkvw, h->qkvw, 3 * C * C);
        UP(d->qkvb, h->qkvb, 3 * C);
        UP(d->projw, h->projw, C * C);
        UP(d->projb, h->projb, C);
        UP(d->rph, h->rph, R);
        UP(d->rpw, h->rpw, R);
        UP(d->n2w, h->n2w, C);
        UP(d->n2b, h->n2b, C);
        UP(d->l1w, h->l1w, M * C);
        UP(d->l1b, h->l1b, M);
        UP(d->l2w, h->l2w, C * M);
        UP(d->l2b, h->l2b, C);
    }
#undef UP
    return 0;
}

/* Activation floats per image: in, X, A, Wb, H, emb, early. */
static void act_sizes(const vit_cuda_t *e, size_t n[7])
{
    size_t C = (size_t)e->wt.info.embed_dim, M = (size_t)e->wt.info.mlp_dim;
    size_t a = e->np_max * C, nk = (size_t)VIT_TOKENS * SAM_EMB_C;
    size_t h = (size_t)VIT_TOKENS * M, q = e->np_max * 3 * C;
    n[0] = (size_t)3 * SAM_IMG * SAM_IMG;
    n[1] = (size_t)VIT_TOKENS * C;
    n[2] = a > nk ? a : nk;
    n[3] = n[2];
    n[4] = h > q ? h : q;
    n[5] = nk;
    n[6] = (size_t)VIT_TOKENS * C;
}

vit_cuda_t *vit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err)
{
    if (!w || max_batch < 1 || max_batch > 64) {
        err_set(err, ERR_INVALID, "vit_cuda_new: need weights and 1 <= max_batch <= 64");
        return NULL;
    }
    vit_cuda_t *e = calloc(1, sizeof *e);
    if (!e) {
        err_set(err, ERR_NOMEM, "vit_cuda: out of memory");
        return NULL;
    }
    if (vit_weights_get(w, &e->wt, err)) {
        err_wrap(err, "vit_cuda");
        free(e);
        return NULL;
    }
    e->max_batch = max_batch;
    e->np_max = VIT_TOKENS;
    for (int i = 0; i < e->wt.info.depth; i++) {
        size_t n = (size_t)e->wt.blk[i].nwin * e->wt.blk[i].nwin * e->wt.blk[i].S * e->wt.blk[i].S;
        if (n > e->np_max) e->np_max = n;
    }
    if (!(e->blk = calloc((size_t)e->wt.info.depth, sizeof *e->blk))) {
        err_set(err, ERR_NOMEM, "vit_cuda: out of memory");
        vit_cuda_destroy(&e);
        return NULL;
    }
    size_t n[7], act = 0, tensors = 14 * (size_t)e->wt.info.depth + 16;
    act_sizes(e, n);
    for (int i = 0; i < 7; i++) act += n[i];
    size_t bytes = (weight_floats(&e->wt) + act * (size_t)max_batch) * sizeof(float) +
                   (tensors + 8) * 256 + ((size_t)16 << 20);
    e->ctx = kcu_ctx_new(device, bytes, KCU_TF32, err);
    if (!e->ctx) {
        err_wrap(err, "vit_cuda");
        vit_cuda_destroy(&e);
        return NULL;
    }
    if (load_all(e, err)) {
        err_wrap(err, "vit_cuda");
        vit_cuda_destroy(&e);
        return NULL;
    }
    size_t Bm = (size_t)max_batch;
    float **buf[7] = {&e->in, &e->X, &e->A, &e->Wb, &e->H, &e->emb, &e->early};
    for (int i = 0; i < 7; i++)
        if (!(*buf[i] = kcu_allocf(e->ctx, Bm * n[i]))) {
            err_set(err, ERR_NOMEM, "vit_cuda: %s", kcu_errmsg(e->ctx));
            vit_cuda_destroy(&e);
            return NULL;
        }
    err_t se;
    if (kcu_sync(e->ctx, &se)) {
        err_set(err, se.code, "vit_cuda: %s", se.msg);
        vit_cuda_destroy(&e);
        return NULL;
    }
    return e;
}

void vit_cuda_destroy(vit_cuda_t **pe)
{
    if (!pe || !*pe) return;
    vit_cuda_t *e = *pe;
    kcu_ctx_destroy(&e->ctx);
    vit_weights_free(&e->wt);
    free(e->blk);
    free(e);
    *pe = NULL;
}

int vit_cuda_early_channels(const vit_cuda_t *e) { return e ? e->wt.info.embed_dim : 0; }

const float *vit_cuda_emb_dev(const vit_cuda_t *e, int i)
{
    if (!e || i < 0 || i >= e->max_batch) return NULL;
    return e->emb + (size_t)i * SAM_EMB_C * VIT_TOKENS;
}

/* Block i on X[B·4096, C] in place (vit_block). */
static int block(vit_cuda_t *e, int i, int B)
{
    kcu_ctx_t *c = e->ctx;
    const vit_info_t *in = &e->wt.info;
    const vit_block_w_t *h = &e->wt.blk[i];
    const dblock_t *d = &e->blk[i];
    int C = in->embed_dim, M = in->mlp_dim, hd = in->head_dim, S = h->S;
    int T = B * VIT_TOKENS, nwin = B * h->nwin * h->nwin, Np = nwin * S * S;
    int global = S == GRID;
    float scale = 1.0f / sqrtf((float)hd);
    int rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->X, d->n1w, d->n1b, T, C, LN_EPS);
    if (global) { /* grid order is window order: qkv from A, attention to Wb, residual fused */
        if (!rc) rc = kcu_linear_ex(c, e->H, 3 * C, e->A, C, d->qkvw, d->qkvb, NULL, 0, Np, 3 * C, C,
                                    KCU_ACT_NONE);
        if (!rc) rc = kcu_relpos_attention_fwd(c, e->Wb, e->H, d->rph, d->rpw, nwin, S, in->heads,
                                               hd, scale);
        if (!rc) rc = kcu_linear_ex(c, e->X, C, e->Wb, C, d->projw, d->projb, e->X, C, T, C, C,
                                    KCU_ACT_NONE);
    } else { /* windows (zero pad tokens) in Wb, attention to A, projection back in Wb */
        if (!rc) rc = kcu_window_partition(c, e->Wb, e->A, B, GRID, GRID, C, S);
        if (!rc) rc = kcu_linear_ex(c, e->H, 3 * C, e->Wb, C, d->qkvw, d->qkvb, NULL, 0, Np, 3 * C,
                                    C, KCU_ACT_NONE);
        if (!rc) rc = kcu_relpos_attention_fwd(c, e->A, e->H, d->rph, d->rpw, nwin, S, in->heads,
                                               hd, scale);
        if (!rc) rc = kcu_linear_ex(c, e->Wb, C, e->A, C, d->projw, d->projb, NULL, 0, Np, C, C,
                                    KCU_ACT_NONE);
        if (!rc) rc = kcu_window_unpartition_add(c, e->X, e->Wb, B, GRID, GRID, C, S);
    }
    /* MLP: X += lin2(GELU(lin1(LN2(X)))) */
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->X, d->n2w, d->n2b, T, C, LN_EPS);
    if (!rc) rc = kcu_linear_ex(c, e->H, M, e->A, C, d->l1w, d->l1b, NULL, 0, T, M, C,
                                KCU_ACT_GELU);
    if (!rc) rc = kcu_linear_ex(c, e->X, C, e->H, M, d->l2w, d->l2b, e->X, C, T, C, M,
                                KCU_ACT_NONE);
    return rc;
}

static int forward_device(vit_cuda_t *e, int B)
{
    kcu_ctx_t *c = e->ctx;
    const vit_info_t *in = &e->wt.info;
    int C = in->embed_dim, T = B * VIT_TOKENS;
    size_t nt = (size_t)VIT_TOKENS * C;
    /* patch embedding: conv 16×16 s16 -> A[B, C, 4096] -> X[B, 4096, C] + pos_embed */
    int rc = kcu_conv2d_fwd(c, e->A, e->in, e->pw, e->pb, B, 3, SAM_IMG, SAM_IMG, C, 16, 16, 0, 1);
    if (!rc) rc = kcu_transpose(c, e->X, e->A, C, VIT_TOKENS, B);
    for (int b = 0; b < B && !rc; b++) rc = kcu_add(c, e->X + b * nt, e->X + b * nt, e->pos, nt);
    for (int i = 0; i < in->depth && !rc; i++) {
        rc = block(e, i, B);
        if (!rc && i == in->first_global) rc = kcu_transpose(c, e->early, e->X, VIT_TOKENS, C, B);
    }
    /* neck: 1×1 C→256 (no bias), LN (1e-6), 3×3 256→256 (no bias), LN, to [B, 256, 4096] */
    if (!rc) rc = kcu_linear_ex(c, e->A, SAM_EMB_C, e->X, C, e->neck0, NULL, NULL, 0, T,
                                SAM_EMB_C, C, KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->A, e->n1w, e->n1b, T, SAM_EMB_C, LN_EPS);
    if (!rc) rc = kcu_conv3_nhwc_fwd(c, e->Wb, e->A, e->neck2, NULL, B, GRID, GRID, SAM_EMB_C,
                                     SAM_EMB_C, 1, KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->Wb, e->n3w, e->n3b, T, SAM_EMB_C, LN_EPS);
    if (!rc) rc = kcu_transpose(c, e->emb, e->A, VIT_TOKENS, SAM_EMB_C, B);
    return rc;
}

static int sync_err(vit_cuda_t *e, int rc, err_t *err)
{
    err_t se = {0};
    int src = kcu_sync(e->ctx, &se);
    if (rc || src)
        return err_set(err, src ? src : rc, "vit_cuda: %s", se.msg[0] ? se.msg : kcu_errmsg(e->ctx));
    return 0;
}

int vit_cuda_forward_resident(vit_cuda_t *e, int B, err_t *err)
{
    if (!e || B < 1 || B > e->max_batch)
        return err_set(err, ERR_INVALID, "vit_cuda_forward: batch %d outside 1..%d", B,
                       e ? e->max_batch : 0);
    return sync_err(e, forward_device(e, B), err);
}

int vit_cuda_forward(vit_cuda_t *e, const float *x, int B, float *emb, float *early, err_t *err)
{
    if (!e || !x || !emb || B < 1 || B > e->max_batch)
        return err_set(err, ERR_INVALID, "vit_cuda_forward: NULL argument or batch %d outside "
                       "1..%d", B, e ? e->max_batch : 0);
    size_t C = (size_t)e->wt.info.embed_dim;
    int rc = kcu_upload(e->ctx, e->in, x, sizeof(float) * (size_t)B * 3 * SAM_IMG * SAM_IMG);
    if (!rc) rc = forward_device(e, B);
    if (!rc)
        rc = kcu_download(e->ctx, emb, e->emb, sizeof(float) * (size_t)B * SAM_EMB_C * VIT_TOKENS);
    if (!rc && early)
        rc = kcu_download(e->ctx, early, e->early, sizeof(float) * (size_t)B * C * VIT_TOKENS);
    return sync_err(e, rc, err);
}

#else /* no CUDA in this build */

struct vit_cuda {
    int unused;
};

vit_cuda_t *vit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err)
{
    (void)w;
    (void)device;
    (void)max_batch;
    err_set(err, ERR_UNSUPPORTED, "vit_cuda: this build has no CUDA kernels");
    return NULL;
}

void vit_cuda_destroy(vit_cuda_t **e)
{
    if (e) *e = NULL;
}

int vit_cuda_forward(vit_cuda_t *e, const float *x, int B, float *emb, float *early, err_t *err)
{
    (void)e;
    (void)x;
    (void)B;
    (void)emb;
    (void)early;
    return err_set(err, ERR_UNSUPPORTED, "vit_cuda: this build has no CUDA kernels");
}

int vit_cuda_forward_resident(vit_cuda_t *e, int B, err_t *err)
{
    (void)e;
    (void)B;
    return err_set(err, ERR_UNSUPPORTED, "vit_cuda: this build has no CUDA kernels");
}

int vit_cuda_early_channels(const vit_cuda_t *e)
{
    (void)e;
    return 0;
}

const float *vit_cuda_emb_dev(const vit_cuda_t *e, int i)
{
    (void)e;
    (void)i;
    return NULL;
}

#endif
