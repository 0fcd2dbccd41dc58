/* sam_cuda.c — TinyViT-5M encoder on the GPU from kcu_ ops (sam_cuda.h). The layer order and
 * every constant follow sam_tinyvit.c (the CPU encoder this must match); layouts: the two
 * patch-embedding convs run NCHW on cuDNN, then one transpose to channel-last tokens
 * [B·H·W, C], where 1×1 convs and linears are GEMMs with fused bias/residual/GELU
 * (kcu_linear_ex), depthwise convs are kcu_dwconv3_nhwc_fwd and window attention reads the
 * image-ordered qkv map (kcu_winattn_fwd, projection + residual in place). The neck ends with
 * a transpose back to [B, 256, 64·64].
 *
 * Device arena per image (floats): X 4.2M (tokens), A 8.4M (patch conv / LN outputs),
 * H1 16.8M and H2 16.8M (hidden maps) — about 185 MB per image of max_batch; weights ~25 MB.
 */
#include "sam_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(MODA_HAVE_CUDA)

#include "kn_cuda.h"
#include "preprocess.h"
#include "sam_parts.h"

#define NSTAGE 4
#define NBLOCK 10
#define HEAD_DIM 32

static const int k_dim[NSTAGE] = {64, 128, 160, 320};
static const int k_depth[NSTAGE] = {2, 2, 6, 2};
static const int k_heads[NSTAGE] = {2, 4, 5, 10};
static const int k_ws[NSTAGE] = {7, 7, 14, 7};
static const int k_side[NSTAGE] = {256, 128, 64, 64};

#define X_FL ((size_t)256 * 256 * 64)
#define A_FL ((size_t)32 * 512 * 512)
#define H_FL ((size_t)256 * 256 * 256)

typedef struct { const float *w, *b; } dlin_t; /* device weight [N, K] (or conv), bias or NULL */
typedef struct { dlin_t c1, c2, c3; } dconv_block_t;
typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *bias, *padrow;
    dlin_t qkv, proj, fc1, fc2, local;
} dattn_block_t;

struct tinyvit_cuda {
    kcu_ctx_t *ctx;
    int max_batch;
    dlin_t pe0, pe1, neck0, neck2;
    const float *n1w, *n1b, *n3w, *n3b;
    dconv_block_t mb[2], merge[3];
    dattn_block_t blk[NBLOCK];
    float *in, *X, *A, *H1, *H2, *emb, *early; /* activations (arena, after the weights) */
};

/* image_encoder.<name> uploaded, or NULL + err */
static const float *up(tinyvit_cuda_t *e, const wts_t *w, err_t *err, const char *name, int ndim,
                       int d0, int d1, int d2, int d3)
{
    char full[256];
    snprintf(full, sizeof full, "image_encoder.%s", name);
    const float *h;
    size_t n = (size_t)d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1) * (ndim > 3 ? d3 : 1);
    switch (ndim) {
    case 1: h = wts_f32(w, full, err, 1, d0); break;
    case 2: h = wts_f32(w, full, err, 2, d0, d1); break;
    default: h = wts_f32(w, full, err, 4, d0, d1, d2, d3); break;
    }
    if (!h) return NULL;
    float *d = kcu_upload_new(e->ctx, h, n);
    if (!d) err_set(err, ERR_NOMEM, "tinyvit_cuda: uploading %s: %s", full, kcu_errmsg(e->ctx));
    return d;
}

#define UP(dst, ...)                                                                              \
    do {                                                                                          \
        if (!((dst) = up(e, w, err, __VA_ARGS__))) return err->code;                             \
    } while (0)

static int load_conv_block(tinyvit_cuda_t *e, const wts_t *w, err_t *err, dconv_block_t *cb,
                           const char *p, int cin, int chid, int cout)
{
    char wn[200], bn[200];
    snprintf(wn, sizeof wn, "%s.conv1.c.weight", p);
    snprintf(bn, sizeof bn, "%s.conv1.c.bias", p);
    UP(cb->c1.w, wn, 4, chid, cin, 1, 1);
    UP(cb->c1.b, bn, 1, chid, 0, 0, 0);
    snprintf(wn, sizeof wn, "%s.conv2.c.weight", p);
    snprintf(bn, sizeof bn, "%s.conv2.c.bias", p);
    UP(cb->c2.w, wn, 4, chid, 1, 3, 3);
    UP(cb->c2.b, bn, 1, chid, 0, 0, 0);
    snprintf(wn, sizeof wn, "%s.conv3.c.weight", p);
    snprintf(bn, sizeof bn, "%s.conv3.c.bias", p);
    UP(cb->c3.w, wn, 4, cout, chid, 1, 1);
    UP(cb->c3.b, bn, 1, cout, 0, 0, 0);
    return 0;
}

static int load_attn_block(tinyvit_cuda_t *e, const wts_t *w, err_t *err, dattn_block_t *b,
                           int stage, int idx)
{
    int C = k_dim[stage], heads = k_heads[stage], ws = k_ws[stage], n = ws * ws;
    char p[128], nm[200];
    snprintf(p, sizeof p, "layers.%d.blocks.%d", stage, idx);
#define N_(s) (snprintf(nm, sizeof nm, "%s.%s", p, s), nm)
    UP(b->ln1_w, N_("attn.norm.weight"), 1, C, 0, 0, 0);
    UP(b->ln1_b, N_("attn.norm.bias"), 1, C, 0, 0, 0);
    UP(b->ln2_w, N_("mlp.norm.weight"), 1, C, 0, 0, 0);
    UP(b->ln2_b, N_("mlp.norm.bias"), 1, C, 0, 0, 0);
    UP(b->qkv.w, N_("attn.qkv.weight"), 2, 3 * C, C, 0, 0);
    UP(b->qkv.b, N_("attn.qkv.bias"), 1, 3 * C, 0, 0, 0);
    UP(b->proj.w, N_("attn.proj.weight"), 2, C, C, 0, 0);
    UP(b->proj.b, N_("attn.proj.bias"), 1, C, 0, 0, 0);
    UP(b->fc1.w, N_("mlp.fc1.weight"), 2, 4 * C, C, 0, 0);
    UP(b->fc1.b, N_("mlp.fc1.bias"), 1, 4 * C, 0, 0, 0);
    UP(b->fc2.w, N_("mlp.fc2.weight"), 2, C, 4 * C, 0, 0);
    UP(b->fc2.b, N_("mlp.fc2.bias"), 1, C, 0, 0, 0);
    UP(b->local.w, N_("local_conv.c.weight"), 4, C, 1, 3, 3);
    UP(b->local.b, N_("local_conv.c.bias"), 1, C, 0, 0, 0);
    /* host-side: expanded bias table [heads, n, n] and the pad token's qkv row */
    char full[256];
    snprintf(full, sizeof full, "image_encoder.%s", N_("attn.attention_biases"));
    const float *tab = wts_f32(w, full, err, 2, heads, n);
    snprintf(full, sizeof full, "image_encoder.%s", N_("attn.qkv.weight"));
    const float *Wq = tab ? wts_f32(w, full, err, 2, 3 * C, C) : NULL;
    snprintf(full, sizeof full, "image_encoder.%s", N_("attn.qkv.bias"));
    const float *bq = Wq ? wts_f32(w, full, err, 1, 3 * C) : NULL;
    snprintf(full, sizeof full, "image_encoder.%s", N_("attn.norm.bias"));
    const float *lb = bq ? wts_f32(w, full, err, 1, C) : NULL;
#undef N_
    if (!lb) return err->code;
    float *big = malloc(sizeof(float) * ((size_t)heads * n * n + 3 * (size_t)C));
    if (!big) return err_set(err, ERR_NOMEM, "tinyvit_cuda: out of memory");
    float *pad = big + (size_t)heads * n * n;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                int dy = abs(i / ws - j / ws), dx = abs(i % ws - j % ws);
                big[((size_t)h * n + i) * n + j] = tab[(size_t)h * n + dy * ws + dx];
            }
    for (int o = 0; o < 3 * C; o++) {
        float s = bq[o];
        for (int c = 0; c < C; c++) s += Wq[(size_t)o * C + c] * lb[c];
        pad[o] = s;
    }
    b->bias = kcu_upload_new(e->ctx, big, (size_t)heads * n * n);
    b->padrow = b->bias ? kcu_upload_new(e->ctx, pad, 3 * (size_t)C) : NULL;
    free(big);
    if (!b->padrow) return err_set(err, ERR_NOMEM, "tinyvit_cuda: %s", kcu_errmsg(e->ctx));
    return 0;
}

static int load_all(tinyvit_cuda_t *e, const wts_t *w, err_t *err)
{
    UP(e->pe0.w, "patch_embed.seq.0.c.weight", 4, 32, 3, 3, 3);
    UP(e->pe0.b, "patch_embed.seq.0.c.bias", 1, 32, 0, 0, 0);
    UP(e->pe1.w, "patch_embed.seq.2.c.weight", 4, 64, 32, 3, 3);
    UP(e->pe1.b, "patch_embed.seq.2.c.bias", 1, 64, 0, 0, 0);
    char p[128];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "layers.0.blocks.%d", i);
        if (load_conv_block(e, w, err, &e->mb[i], p, 64, 256, 64)) return err->code;
    }
    for (int s = 0; s < 3; s++) {
        snprintf(p, sizeof p, "layers.%d.downsample", s);
        if (load_conv_block(e, w, err, &e->merge[s], p, k_dim[s], k_dim[s + 1], k_dim[s + 1]))
            return err->code;
    }
    int bi = 0;
    for (int s = 1; s < NSTAGE; s++)
        for (int i = 0; i < k_depth[s]; i++)
            if (load_attn_block(e, w, err, &e->blk[bi++], s, i)) return err->code;
    UP(e->neck0.w, "neck.0.weight", 4, 256, 320, 1, 1);
    e->neck0.b = NULL;
    UP(e->neck2.w, "neck.2.weight", 4, 256, 256, 3, 3);
    e->neck2.b = NULL;
    UP(e->n1w, "neck.1.weight", 1, 256, 0, 0, 0);
    UP(e->n1b, "neck.1.bias", 1, 256, 0, 0, 0);
    UP(e->n3w, "neck.3.weight", 1, 256, 0, 0, 0);
    UP(e->n3b, "neck.3.bias", 1, 256, 0, 0, 0);
    return 0;
}

tinyvit_cuda_t *tinyvit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err)
{
    if (!w || max_batch < 1 || max_batch > 64) {
        err_set(err, ERR_INVALID, "tinyvit_cuda_new: need weights and 1 <= max_batch <= 64");
        return NULL;
    }
    tinyvit_cuda_t *e = calloc(1, sizeof *e);
    if (!e) {
        err_set(err, ERR_NOMEM, "tinyvit_cuda: out of memory");
        return NULL;
    }
    size_t Bm = (size_t)max_batch;
    size_t act = Bm * (3 * (size_t)SAM_IMG * SAM_IMG + X_FL + A_FL + 2 * H_FL +
                       (size_t)(256 + 160) * 4096);
    size_t bytes = ((size_t)64 << 20) + act * sizeof(float) + 64 * 256;
    e->ctx = kcu_ctx_new(device, bytes, KCU_TF32, err);
    if (!e->ctx) {
        err_wrap(err, "tinyvit_cuda");
        free(e);
        return NULL;
    }
    e->max_batch = max_batch;
    if (load_all(e, w, err)) {
        err_wrap(err, "tinyvit_cuda");
        tinyvit_cuda_destroy(&e);
        return NULL;
    }
    if (!(e->in = kcu_allocf(e->ctx, Bm * 3 * SAM_IMG * SAM_IMG)) ||
        !(e->X = kcu_allocf(e->ctx, Bm * X_FL)) || !(e->A = kcu_allocf(e->ctx, Bm * A_FL)) ||
        !(e->H1 = kcu_allocf(e->ctx, Bm * H_FL)) || !(e->H2 = kcu_allocf(e->ctx, Bm * H_FL)) ||
        !(e->emb = kcu_allocf(e->ctx, Bm * 256 * 4096)) ||
        !(e->early = kcu_allocf(e->ctx, Bm * 160 * 4096))) {
        err_set(err, ERR_NOMEM, "tinyvit_cuda: %s", kcu_errmsg(e->ctx));
        tinyvit_cuda_destroy(&e);
        return NULL;
    }
    err_t se;
    if (kcu_sync(e->ctx, &se)) {
        err_set(err, se.code, "tinyvit_cuda: %s", se.msg);
        tinyvit_cuda_destroy(&e);
        return NULL;
    }
    return e;
}

void tinyvit_cuda_destroy(tinyvit_cuda_t **pe)
{
    if (!pe || !*pe) return;
    kcu_ctx_destroy(&(*pe)->ctx);
    free(*pe);
    *pe = NULL;
}

/* MBConv (in place on X, residual + GELU) or PatchMerging (X → X via H2 copy): X[B·side², cin] */
static int conv_block(tinyvit_cuda_t *e, const dconv_block_t *cb, int B, int side, int stride,
                      int cin, int chid, int cout, int mbconv)
{
    kcu_ctx_t *c = e->ctx;
    int M = B * side * side, so = (side - 1) / stride + 1, Mo = B * so * so;
    int rc = kcu_linear_ex(c, e->H1, chid, e->X, cin, cb->c1.w, cb->c1.b, NULL, 0, M, chid, cin,
                           KCU_ACT_GELU);
    if (!rc) rc = kcu_dwconv3_nhwc_fwd(c, e->H2, e->H1, cb->c2.w, cb->c2.b, B, side, side, chid,
                                       stride, KCU_ACT_GELU);
    if (rc) return rc;
    if (mbconv)
        return kcu_linear_ex(c, e->X, cout, e->H2, chid, cb->c3.w, cb->c3.b, e->X, cout, Mo, cout,
                             chid, KCU_ACT_GELU);
    rc = kcu_linear_ex(c, e->H1, cout, e->H2, chid, cb->c3.w, cb->c3.b, NULL, 0, Mo, cout, chid,
                       KCU_ACT_NONE);
    return rc ? rc : kcu_copy(c, e->X, e->H1, (size_t)Mo * cout * sizeof(float));
}

static int attn_block(tinyvit_cuda_t *e, const dattn_block_t *b, int B, int stage)
{
    kcu_ctx_t *c = e->ctx;
    int C = k_dim[stage], side = k_side[stage], M = B * side * side;
    int rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->X, b->ln1_w, b->ln1_b, M, C, 1e-5f);
    if (!rc) rc = kcu_linear_ex(c, e->H1, 3 * C, e->A, C, b->qkv.w, b->qkv.b, NULL, 0, M, 3 * C, C,
                                KCU_ACT_NONE);
    if (!rc) rc = kcu_winattn_fwd(c, e->X, C, e->H1, b->padrow, b->bias, B, side, side,
                                  k_heads[stage], HEAD_DIM, k_ws[stage],
                                  1.0f / sqrtf((float)HEAD_DIM), b->proj.w, b->proj.b);
    /* local conv: H2 = dw(X); X = H2 + fc2(GELU(fc1(LN(H2)))) */
    if (!rc) rc = kcu_dwconv3_nhwc_fwd(c, e->H2, e->X, b->local.w, b->local.b, B, side, side, C, 1,
                                       KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->H2, b->ln2_w, b->ln2_b, M, C, 1e-5f);
    if (!rc) rc = kcu_linear_ex(c, e->H1, 4 * C, e->A, C, b->fc1.w, b->fc1.b, NULL, 0, M, 4 * C, C,
                                KCU_ACT_GELU);
    if (!rc) rc = kcu_linear_ex(c, e->X, C, e->H1, 4 * C, b->fc2.w, b->fc2.b, e->H2, C, M, C, 4 * C,
                                KCU_ACT_NONE);
    return rc;
}

static int forward_device(tinyvit_cuda_t *e, int B)
{
    kcu_ctx_t *c = e->ctx;
    /* patch embedding, NCHW: conv 3→32 s2 + GELU (A), conv 32→64 s2 (H1), then tokens (X) */
    int rc = kcu_conv2d_fwd(c, e->A, e->in, e->pe0.w, e->pe0.b, B, 3, SAM_IMG, SAM_IMG, 32, 3, 2,
                            1, 1);
    if (!rc) rc = kcu_gelu_fwd(c, e->A, e->A, (size_t)B * A_FL);
    if (!rc) rc = kcu_conv2d_fwd(c, e->H1, e->A, e->pe1.w, e->pe1.b, B, 32, 512, 512, 64, 3, 2, 1, 1);
    if (!rc) rc = kcu_transpose(c, e->X, e->H1, 64, 256 * 256, B);
    for (int i = 0; i < 2 && !rc; i++) rc = conv_block(e, &e->mb[i], B, 256, 1, 64, 256, 64, 1);
    if (!rc) rc = conv_block(e, &e->merge[0], B, 256, 2, 64, 128, 128, 0);
    int bi = 0;
    for (int s = 1; s < NSTAGE && !rc; s++) {
        for (int i = 0; i < k_depth[s] && !rc; i++) rc = attn_block(e, &e->blk[bi++], B, s);
        if (!rc && s < NSTAGE - 1) {
            int st = k_dim[s + 1] == 320 ? 1 : 2;
            rc = conv_block(e, &e->merge[s], B, k_side[s], st, k_dim[s], k_dim[s + 1], k_dim[s + 1], 0);
            if (!rc && s == 1) rc = kcu_transpose(c, e->early, e->X, 4096, 160, B);
        }
    }
    /* neck: 1×1 320→256, LN (1e-6), 3×3 256→256, LN (1e-6), back to [B, 256, 4096] */
    int M = B * 4096;
    if (!rc) rc = kcu_linear_ex(c, e->A, 256, e->X, 320, e->neck0.w, NULL, NULL, 0, M, 256, 320,
                                KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->A, e->n1w, e->n1b, M, 256, 1e-6f);
    if (!rc) rc = kcu_conv3_nhwc_fwd(c, e->H2, e->A, e->neck2.w, NULL, B, 64, 64, 256, 256, 1,
                                     KCU_ACT_NONE);
    if (!rc) rc = kcu_layernorm_fwd(c, e->A, NULL, NULL, e->H2, e->n3w, e->n3b, M, 256, 1e-6f);
    if (!rc) rc = kcu_transpose(c, e->emb, e->A, 4096, 256, B);
    return rc;
}

static int sync_err(tinyvit_cuda_t *e, int rc, err_t *err)
{
    err_t se = {0};
    int src = kcu_sync(e->ctx, &se);
    if (rc || src)
        return err_set(err, src ? src : rc, "tinyvit_cuda: %s", se.msg[0] ? se.msg : kcu_errmsg(e->ctx));
    return 0;
}

int tinyvit_cuda_forward_resident(tinyvit_cuda_t *e, int B, err_t *err)
{
    if (!e || B < 1 || B > e->max_batch)
        return err_set(err, ERR_INVALID, "tinyvit_cuda_forward: batch %d outside 1..%d", B,
                       e ? e->max_batch : 0);
    return sync_err(e, forward_device(e, B), err);
}

int tinyvit_cuda_forward(tinyvit_cuda_t *e, const float *x, int B, float *emb, float *early,
                         err_t *err)
{
    if (!e || !x || !emb || B < 1 || B > e->max_batch)
        return err_set(err, ERR_INVALID, "tinyvit_cuda_forward: NULL argument or batch %d outside "
                       "1..%d", B, e ? e->max_batch : 0);
    int rc = kcu_upload(e->ctx, e->in, x, sizeof(float) * (size_t)B * 3 * SAM_IMG * SAM_IMG);
    if (!rc) rc = forward_device(e, B);
    if (!rc) rc = kcu_download(e->ctx, emb, e->emb, sizeof(float) * (size_t)B * 256 * 4096);
    if (!rc && early)
        rc = kcu_download(e->ctx, early, e->early, sizeof(float) * (size_t)B * 160 * 4096);
    return sync_err(e, rc, err);
}

const float *tinyvit_cuda_emb_dev(const tinyvit_cuda_t *e, int i)
{
    if (!e || i < 0 || i >= e->max_batch) return NULL;
    return e->emb + (size_t)i * 256 * 4096;
}

#else /* no CUDA in this build */

struct tinyvit_cuda {
    int unused;
};

const float *tinyvit_cuda_emb_dev(const tinyvit_cuda_t *e, int i)
{
    (void)e;
    (void)i;
    return NULL;
}

tinyvit_cuda_t *tinyvit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err)
{
    (void)w;
    (void)device;
    (void)max_batch;
    err_set(err, ERR_UNSUPPORTED, "tinyvit_cuda: this build has no CUDA kernels");
    return NULL;
}

void tinyvit_cuda_destroy(tinyvit_cuda_t **e)
{
    if (e) *e = NULL;
}

int tinyvit_cuda_forward(tinyvit_cuda_t *e, const float *x, int B, float *emb, float *early,
                         err_t *err)
{
    (void)e;
    (void)x;
    (void)B;
    (void)emb;
    (void)early;
    return err_set(err, ERR_UNSUPPORTED, "tinyvit_cuda: this build has no CUDA kernels");
}

int tinyvit_cuda_forward_resident(tinyvit_cuda_t *e, int B, err_t *err)
{
    (void)e;
    (void)B;
    return err_set(err, ERR_UNSUPPORTED, "tinyvit_cuda: this build has no CUDA kernels");
}

#endif
