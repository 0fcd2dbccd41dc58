/* adapter_cuda.c — the MoDA adapter head on the GPU (adapter_cuda.h). Layer by layer the same
 * computation as adapter_head_fwd / adapter_head_bwd in adapter.c (the reference), on NCHW
 * maps: the CPU keeps channel-last maps for its packed GEMMs, the GPU keeps the maps as the
 * decoder and the encoder deliver them (cuDNN and the convT ops take NCHW). Gradients nobody
 * needs are skipped as on the CPU: `up`, emb and early are constants (no input gradient for
 * the first layer of each branch), and `up`'s own gradient (fused = up + ...) is not
 * propagated into the frozen decoder.
 */
#include "adapter_cuda.h"

#include <stdlib.h>
#include <string.h>

#if defined(MODA_HAVE_CUDA)

#define C SAM_EMB_C
#define LR SAM_LOWRES
#define LRN ((size_t)LR * LR)   /* 65536 */
#define MIDS (LR / 2)           /* 128 */
#define MIDN ((size_t)MIDS * MIDS) /* 16384 */
#define E SAM_EMB               /* 64 */

struct adapter_cuda {
    kcu_ctx_t *ctx;
    int early_c;
    size_t size;
    size_t off[ADP_NPARAM];
    float *p, *g, *m, *v; /* [size] each */
    /* activations of the last forward */
    int have_fwd;
    const float *hq_out, *up, *emb, *early; /* borrowed inputs */
    float *h1, *h2, *hyper, *dhyper, *dh1, *dh2; /* [256] [256] [32] [32] [256] [256] */
    float *f1, *f1n, *f1g;  /* mask_feature: conv1 out, LayerNorm out, GELU out [64, LRN] */
    float *e1, *e1n, *e1g;  /* embedding_encoder: [64, MIDN] */
    float *c1, *c1n, *c1g;  /* compress: [256, MIDN] */
    float *fused, *tmp;     /* [32, LRN] */
    float *dA, *dB;         /* [max(64 LRN, 256 MIDN)] backward scratch */
};

#define P(d, i) ((d)->p + (d)->off[i])
#define G(d, i) ((d)->g + (d)->off[i])

static int fail(adapter_cuda_t *d, int rc, const char *what, err_t *err)
{
    return err_set(err, rc ? rc : ERR_DEVICE, "adapter_cuda: %s: %s", what, kcu_errmsg(d->ctx));
}

#define NBUF 23

/* floats of each device buffer, in adapter_cuda_new's order */
static void buf_sizes(const adapter_t *a, size_t n[NBUF])
{
    size_t big = 64 * LRN > C * MIDN ? 64 * LRN : C * MIDN;
    size_t v[NBUF] = {a->size, a->size, a->size, a->size, C, C, ADP_HYP, ADP_HYP, C, C,
                      64 * LRN, 64 * LRN, 64 * LRN, 64 * MIDN, 64 * MIDN, 64 * MIDN,
                      C * MIDN, C * MIDN, C * MIDN, ADP_HYP * LRN, ADP_HYP * LRN, big, big};
    memcpy(n, v, sizeof v);
}

size_t adapter_cuda_arena_bytes(const adapter_t *a)
{
    size_t n[NBUF], b = 0;
    buf_sizes(a, n);
    for (int i = 0; i < NBUF; i++) b += (n[i] * sizeof(float) + 255) / 256 * 256;
    return b;
}

adapter_cuda_t *adapter_cuda_new(const adapter_t *a, kcu_ctx_t *ctx, err_t *err)
{
    if (!a || !ctx) {
        err_set(err, ERR_INVALID, "adapter_cuda_new: NULL argument");
        return NULL;
    }
    adapter_cuda_t *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(err, ERR_NOMEM, "adapter_cuda_new: out of memory");
        return NULL;
    }
    d->ctx = ctx;
    d->early_c = a->early_c;
    d->size = a->size;
    for (int i = 0; i < ADP_NPARAM; i++) d->off[i] = a->params[i].off;
    float **bufs[] = {&d->p, &d->g, &d->m, &d->v, &d->h1, &d->h2, &d->hyper, &d->dhyper,
                      &d->dh1, &d->dh2, &d->f1, &d->f1n, &d->f1g, &d->e1, &d->e1n, &d->e1g,
                      &d->c1, &d->c1n, &d->c1g, &d->fused, &d->tmp, &d->dA, &d->dB};
    size_t n[NBUF];
    buf_sizes(a, n);
    for (size_t i = 0; i < NBUF; i++)
        if (!(*bufs[i] = kcu_allocf(ctx, n[i]))) {
            err_set(err, ERR_NOMEM, "adapter_cuda_new: device arena too small (%zu of %zu bytes "
                    "used): %s", kcu_arena_used(ctx), kcu_arena_size(ctx), kcu_errmsg(ctx));
            free(d);
            return NULL;
        }
    int rc = kcu_upload(ctx, d->p, a->data, sizeof(float) * a->size);
    if (!rc) rc = kcu_zero(ctx, d->g, sizeof(float) * a->size);
    if (!rc) rc = kcu_zero(ctx, d->m, sizeof(float) * a->size);
    if (!rc) rc = kcu_zero(ctx, d->v, sizeof(float) * a->size);
    if (rc) {
        fail(d, rc, "adapter_cuda_new", err);
        free(d);
        return NULL;
    }
    return d;
}

void adapter_cuda_destroy(adapter_cuda_t **dp)
{
    if (!dp || !*dp) return;
    free(*dp); /* device memory belongs to the context's arena */
    *dp = NULL;
}

static int same_layout(const adapter_cuda_t *d, const adapter_t *a, const char *op, err_t *err)
{
    if (!a || a->size != d->size || a->early_c != d->early_c)
        return err_set(err, ERR_INVALID, "%s: adapter layout differs (early_c %d, %zu floats; "
                       "device %d, %zu)", op, a ? a->early_c : 0, a ? a->size : 0, d->early_c,
                       d->size);
    return 0;
}

int adapter_cuda_upload(adapter_cuda_t *d, const adapter_t *a, err_t *err)
{
    int rc = same_layout(d, a, "adapter_cuda_upload", err);
    if (rc) return rc;
    rc = kcu_upload(d->ctx, d->p, a->data, sizeof(float) * a->size);
    return rc ? fail(d, rc, "upload", err) : 0;
}

int adapter_cuda_download(adapter_cuda_t *d, adapter_t *a, err_t *err)
{
    int rc = same_layout(d, a, "adapter_cuda_download", err);
    if (rc) return rc;
    if ((rc = kcu_sync(d->ctx, err))) return rc;
    rc = kcu_download(d->ctx, a->data, d->p, sizeof(float) * a->size);
    return rc ? fail(d, rc, "download", err) : 0;
}

float *adapter_cuda_params(adapter_cuda_t *d) { return d->p; }
float *adapter_cuda_grad(adapter_cuda_t *d) { return d->g; }
const float *adapter_cuda_hq_token(adapter_cuda_t *d) { return P(d, ADP_P_TOK); }
float *adapter_cuda_hq_token_grad(adapter_cuda_t *d) { return G(d, ADP_P_TOK); }

int adapter_cuda_zero_grad(adapter_cuda_t *d, err_t *err)
{
    int rc = kcu_zero(d->ctx, d->g, sizeof(float) * d->size);
    return rc ? fail(d, rc, "zero_grad", err) : 0;
}

int adapter_cuda_reset_adam(adapter_cuda_t *d, err_t *err)
{
    int rc = kcu_zero(d->ctx, d->m, sizeof(float) * d->size);
    if (!rc) rc = kcu_zero(d->ctx, d->v, sizeof(float) * d->size);
    return rc ? fail(d, rc, "reset_adam", err) : 0;
}

/* One convT branch: convT(Cin → Cmid, x[Cin, 64, 64]) → LayerNorm2d → GELU → convT(Cmid → 32)
 * into d->tmp [32, 256, 256]; a1 / a1n / a1g keep the three activations. */
static int branch_fwd(adapter_cuda_t *d, int p0, const float *x, int Cin, int Cmid, float *a1,
                      float *a1n, float *a1g)
{
    kcu_ctx_t *c = d->ctx;
    int rc = kcu_convt2x2_fwd(c, a1, x, P(d, p0), P(d, p0 + 1), 1, Cin, E, E, Cmid);
    if (!rc) rc = kcu_layernorm2d_fwd(c, a1n, a1, P(d, p0 + 2), P(d, p0 + 3), Cmid, (int)MIDN,
                                      ADP_LN_EPS);
    if (!rc) rc = kcu_gelu_fwd(c, a1g, a1n, (size_t)Cmid * MIDN);
    if (!rc) rc = kcu_convt2x2_fwd(c, d->tmp, a1g, P(d, p0 + 4), P(d, p0 + 5), 1, Cmid, MIDS,
                                   MIDS, ADP_HYP);
    return rc;
}

static int head_fwd(adapter_cuda_t *d, float *logits)
{
    kcu_ctx_t *c = d->ctx;
    /* hq_mlp → hyper */
    int rc = kcu_linear_fwd(c, d->h1, d->hq_out, P(d, ADP_P_M0W), P(d, ADP_P_M0B), 1, C, C);
    if (!rc) rc = kcu_relu_fwd(c, d->h1, d->h1, C);
    if (!rc) rc = kcu_linear_fwd(c, d->h2, d->h1, P(d, ADP_P_M1W), P(d, ADP_P_M1B), 1, C, C);
    if (!rc) rc = kcu_relu_fwd(c, d->h2, d->h2, C);
    if (!rc) rc = kcu_linear_fwd(c, d->hyper, d->h2, P(d, ADP_P_M2W), P(d, ADP_P_M2B), 1, C,
                                 ADP_HYP);
    /* mask_feature(up) → fused */
    if (!rc) rc = kcu_conv2d_fwd(c, d->f1, d->up, P(d, ADP_P_F0W), P(d, ADP_P_F0B), 1, ADP_HYP,
                                 LR, LR, 64, 3, 1, 1, 1);
    if (!rc) rc = kcu_layernorm2d_fwd(c, d->f1n, d->f1, P(d, ADP_P_F1W), P(d, ADP_P_F1B), 64,
                                      (int)LRN, ADP_LN_EPS);
    if (!rc) rc = kcu_gelu_fwd(c, d->f1g, d->f1n, 64 * LRN);
    if (!rc) rc = kcu_conv2d_fwd(c, d->fused, d->f1g, P(d, ADP_P_F3W), P(d, ADP_P_F3B), 1, 64,
                                 LR, LR, ADP_HYP, 3, 1, 1, 1);
    /* + embedding_encoder(emb) + compress(early) + up */
    size_t nf = ADP_HYP * LRN;
    if (!rc) rc = branch_fwd(d, ADP_P_E0W, d->emb, C, 64, d->e1, d->e1n, d->e1g);
    if (!rc) rc = kcu_add(c, d->fused, d->fused, d->tmp, nf);
    if (!rc) rc = branch_fwd(d, ADP_P_C0W, d->early, d->early_c, C, d->c1, d->c1n, d->c1g);
    if (!rc) rc = kcu_add(c, d->fused, d->fused, d->tmp, nf);
    if (!rc) rc = kcu_add(c, d->fused, d->fused, d->up, nf);
    /* logits[1, LRN] = hyper[1, 32] · fused[32, LRN] */
    if (!rc) rc = kcu_gemm(c, 0, 0, 1, (int)LRN, ADP_HYP, 1.0f, d->hyper, ADP_HYP, d->fused,
                           (int)LRN, 0.0f, logits, (int)LRN);
    return rc;
}

int adapter_cuda_head_fwd(adapter_cuda_t *d, const float *hq_out_dev, const float *up_dev,
                          const float *emb_dev, const float *early_dev, float *logits_dev,
                          err_t *err)
{
    if (!d || !hq_out_dev || !up_dev || !emb_dev || !early_dev || !logits_dev)
        return err_set(err, ERR_INVALID, "adapter_cuda_head_fwd: NULL argument");
    d->have_fwd = 0;
    d->hq_out = hq_out_dev;
    d->up = up_dev;
    d->emb = emb_dev;
    d->early = early_dev;
    int rc = head_fwd(d, logits_dev);
    if (rc) return fail(d, rc, "head forward", err);
    d->have_fwd = 1;
    return 0;
}

/* Backward of one branch from dfused: both convTs (weights, biases), the LayerNorm; no input
 * gradient for the first convT (x is a constant). */
static int branch_bwd(adapter_cuda_t *d, int p0, const float *x, int Cin, int Cmid,
                      const float *a1, const float *a1n, const float *a1g)
{
    kcu_ctx_t *c = d->ctx;
    int rc = kcu_convt2x2_bwd(c, d->dA, G(d, p0 + 4), G(d, p0 + 5), d->tmp, a1g, P(d, p0 + 4),
                              Cmid, MIDS, MIDS, ADP_HYP);
    if (!rc) rc = kcu_gelu_bwd(c, d->dA, d->dA, a1n, (size_t)Cmid * MIDN);
    if (!rc) rc = kcu_layernorm2d_bwd(c, d->dB, G(d, p0 + 2), G(d, p0 + 3), d->dA, a1,
                                      P(d, p0 + 2), Cmid, (int)MIDN, ADP_LN_EPS);
    if (!rc) rc = kcu_convt2x2_bwd(c, NULL, G(d, p0), G(d, p0 + 1), d->dB, x, P(d, p0), Cin, E,
                                   E, Cmid);
    return rc;
}

static int head_bwd(adapter_cuda_t *d, const float *dlogits, float *d_hq_out)
{
    kcu_ctx_t *c = d->ctx;
    float *df = d->tmp; /* dfused [32, LRN]: tmp is free after the forward */
    /* logits = hyper · fused: dhyper[1, 32] = dlogits[1, LRN] · fusedᵀ, dfused = hyperᵀ dlogits */
    int rc = kcu_gemm(c, 0, 1, 1, ADP_HYP, (int)LRN, 1.0f, dlogits, (int)LRN, d->fused, (int)LRN,
                      0.0f, d->dhyper, ADP_HYP);
    if (!rc) rc = kcu_gemm(c, 1, 0, ADP_HYP, (int)LRN, 1, 1.0f, d->hyper, ADP_HYP, dlogits,
                           (int)LRN, 0.0f, df, (int)LRN);
    /* mask_feature: conv2 (dx, dw, db), GELU, LayerNorm2d, conv1 (dw, db only) */
    if (!rc) rc = kcu_conv2d_bwd(c, d->dA, G(d, ADP_P_F3W), G(d, ADP_P_F3B), df, d->f1g,
                                 P(d, ADP_P_F3W), 1, 64, LR, LR, ADP_HYP, 3, 1, 1, 1);
    if (!rc) rc = kcu_gelu_bwd(c, d->dA, d->dA, d->f1n, 64 * LRN);
    if (!rc) rc = kcu_layernorm2d_bwd(c, d->dB, G(d, ADP_P_F1W), G(d, ADP_P_F1B), d->dA, d->f1,
                                      P(d, ADP_P_F1W), 64, (int)LRN, ADP_LN_EPS);
    if (!rc) rc = kcu_conv2d_bwd(c, NULL, G(d, ADP_P_F0W), G(d, ADP_P_F0B), d->dB, d->up,
                                 P(d, ADP_P_F0W), 1, ADP_HYP, LR, LR, 64, 3, 1, 1, 1);
    /* the two convT branches share dfused */
    if (!rc) rc = branch_bwd(d, ADP_P_E0W, d->emb, C, 64, d->e1, d->e1n, d->e1g);
    if (!rc) rc = branch_bwd(d, ADP_P_C0W, d->early, d->early_c, C, d->c1, d->c1n, d->c1g);
    /* hq_mlp */
    if (!rc) rc = kcu_linear_bwd(c, d->dh2, G(d, ADP_P_M2W), G(d, ADP_P_M2B), d->dhyper, d->h2,
                                 P(d, ADP_P_M2W), 1, C, ADP_HYP);
    if (!rc) rc = kcu_relu_bwd(c, d->dh2, d->dh2, d->h2, C);
    if (!rc) rc = kcu_linear_bwd(c, d->dh1, G(d, ADP_P_M1W), G(d, ADP_P_M1B), d->dh2, d->h1,
                                 P(d, ADP_P_M1W), 1, C, C);
    if (!rc) rc = kcu_relu_bwd(c, d->dh1, d->dh1, d->h1, C);
    if (!rc) rc = kcu_linear_bwd(c, d_hq_out, G(d, ADP_P_M0W), G(d, ADP_P_M0B), d->dh1,
                                 d->hq_out, P(d, ADP_P_M0W), 1, C, C);
    return rc;
}

int adapter_cuda_head_bwd(adapter_cuda_t *d, const float *dlogits_dev, float *d_hq_out_dev,
                          err_t *err)
{
    if (!d || !dlogits_dev || !d_hq_out_dev)
        return err_set(err, ERR_INVALID, "adapter_cuda_head_bwd: NULL argument");
    if (!d->have_fwd)
        return err_set(err, ERR_STATE, "adapter_cuda_head_bwd: no forward recorded");
    int rc = head_bwd(d, dlogits_dev, d_hq_out_dev);
    return rc ? fail(d, rc, "head backward", err) : 0;
}

int adapter_cuda_adam_step(adapter_cuda_t *d, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int step, err_t *err)
{
    int rc = kcu_adam_step(d->ctx, d->p, d->g, d->m, d->v, d->size, lr, beta1, beta2, eps,
                           weight_decay, step);
    return rc ? fail(d, rc, "adam step", err) : 0;
}

#else /* no CUDA: every entry point exists and reports it */

static int no_cuda(err_t *err)
{
    return err_set(err, ERR_UNSUPPORTED, "adapter_cuda: this build has no CUDA kernels");
}

adapter_cuda_t *adapter_cuda_new(const adapter_t *a, kcu_ctx_t *ctx, err_t *err)
{
    (void)a;
    (void)ctx;
    no_cuda(err);
    return NULL;
}

void adapter_cuda_destroy(adapter_cuda_t **d)
{
    if (d) *d = NULL;
}

size_t adapter_cuda_arena_bytes(const adapter_t *a)
{
    (void)a;
    return 0;
}

int adapter_cuda_upload(adapter_cuda_t *d, const adapter_t *a, err_t *err)
{
    (void)d;
    (void)a;
    return no_cuda(err);
}

int adapter_cuda_download(adapter_cuda_t *d, adapter_t *a, err_t *err)
{
    (void)d;
    (void)a;
    return no_cuda(err);
}

float *adapter_cuda_params(adapter_cuda_t *d) { (void)d; return NULL; }
float *adapter_cuda_grad(adapter_cuda_t *d) { (void)d; return NULL; }
const float *adapter_cuda_hq_token(adapter_cuda_t *d) { (void)d; return NULL; }
float *adapter_cuda_hq_token_grad(adapter_cuda_t *d) { (void)d; return NULL; }

int adapter_cuda_zero_grad(adapter_cuda_t *d, err_t *err)
{
    (void)d;
    return no_cuda(err);
}

int adapter_cuda_reset_adam(adapter_cuda_t *d, err_t *err)
{
    (void)d;
    return no_cuda(err);
}

int adapter_cuda_head_fwd(adapter_cuda_t *d, const float *hq_out_dev, const float *up_dev,
                          const float *emb_dev, const float *early_dev, float *logits_dev,
                          err_t *err)
{
    (void)d;
    (void)hq_out_dev;
    (void)up_dev;
    (void)emb_dev;
    (void)early_dev;
    (void)logits_dev;
    return no_cuda(err);
}

int adapter_cuda_head_bwd(adapter_cuda_t *d, const float *dlogits_dev, float *d_hq_out_dev,
                          err_t *err)
{
    (void)d;
    (void)dlogits_dev;
    (void)d_hq_out_dev;
    return no_cuda(err);
}

int adapter_cuda_adam_step(adapter_cuda_t *d, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int step, err_t *err)
{
    (void)d;
    (void)lr;
    (void)beta1;
    (void)beta2;
    (void)eps;
    (void)weight_decay;
    (void)step;
    return no_cuda(err);
}

#endif
