/* train_cuda.c — the GPU side of the adapter training step (train_cuda.h): a device-resident
 * training set, the frozen decoder (samdec_cuda), the adapter head (adapter_cuda) and the
 * point loss, one sample at a time on one stream. The per-sample order of operations is
 * sample_step's in train.c (the CPU reference).
 */
#include "train_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "adapter_cuda.h"
#include "kn.h"
#include "kn_cuda.h"
#include "samdec_cuda.h"

#if defined(MODA_HAVE_CUDA)

#define LR SAM_LOWRES
#define LRN ((size_t)LR * LR)
#define EN ((size_t)SAM_EMB * SAM_EMB)
#define DEC_ARENA ((size_t)160 << 20) /* samdec_cuda: ~16 MB weights + ~60 MB activations */

struct train_cuda {
    kcu_ctx_t *ctx;
    samdec_cuda_t *dec;
    adapter_cuda_t *ad;
    int n, P, slots, early_c;
    float **emb, **early, **gt; /* [n] device pointers of each sample */
    float *up, *hq_out, *d_hq_out, *d_tok; /* [32, LRN], [256] x3 */
    float *logits, *dmap, *mask_in;         /* [LRN] */
    float *pts, *lp, *tp, *dlp;             /* [2P], [P] x3 */
    float *loss3;                           /* [slots, 3] */
};

static int dev_fail(train_cuda_t *g, int rc, const char *what, err_t *err)
{
    return err_set(err, rc ? rc : ERR_DEVICE, "train (cuda): %s: %s", what, kcu_errmsg(g->ctx));
}

train_cuda_t *train_cuda_new(sam_t *sam, const train_set_t *ts, const adapter_t *a, int P,
                             int slots, int tf32, err_t *err)
{
    if (!sam || !ts || !a || P < 1 || slots < 1 || ts->early_c != a->early_c) {
        err_set(err, ERR_INVALID, "train_cuda_new: bad arguments");
        return NULL;
    }
    train_cuda_t *g = calloc(1, sizeof *g);
    if (g) {
        g->emb = calloc((size_t)ts->n + 1, sizeof *g->emb);
        g->early = calloc((size_t)ts->n + 1, sizeof *g->early);
        g->gt = calloc((size_t)ts->n + 1, sizeof *g->gt);
    }
    if (!g || !g->emb || !g->early || !g->gt) {
        if (g) {
            free(g->emb);
            free(g->early);
            free(g->gt);
        }
        free(g);
        err_set(err, ERR_NOMEM, "train_cuda_new: out of memory");
        return NULL;
    }
    g->n = ts->n;
    g->P = P;
    g->slots = slots;
    g->early_c = a->early_c;
    size_t per_sample = ((size_t)SAM_EMB_C + (size_t)a->early_c) * EN + LRN;
    size_t per_step = (size_t)(ADP_HYP + 3) * LRN + 4 * SAM_EMB_C + 5 * (size_t)P + 3 * slots;
    size_t arena = DEC_ARENA + adapter_cuda_arena_bytes(a) +
                   (sizeof(float) * per_sample + 1024) * (size_t)ts->n +
                   sizeof(float) * per_step + ((size_t)16 << 20);
    g->ctx = kcu_ctx_new(0, arena, tf32 ? KCU_TF32 : 0, err);
    if (!g->ctx) goto fail;
    if (!(g->dec = samdec_cuda_new(sam_weights(sam), g->ctx, err))) goto fail;
    if (!(g->ad = adapter_cuda_new(a, g->ctx, err))) goto fail;
    float **bufs[] = {&g->up, &g->hq_out, &g->d_hq_out, &g->d_tok, &g->logits, &g->dmap,
                      &g->mask_in, &g->pts, &g->lp, &g->tp, &g->dlp, &g->loss3};
    size_t nb[] = {ADP_HYP * LRN, SAM_EMB_C, SAM_EMB_C, SAM_EMB_C, LRN, LRN, LRN,
                   2 * (size_t)P, (size_t)P, (size_t)P, (size_t)P, 3 * (size_t)slots};
    for (size_t i = 0; i < sizeof nb / sizeof nb[0]; i++)
        if (!(*bufs[i] = kcu_allocf(g->ctx, nb[i]))) {
            err_set(err, ERR_NOMEM, "train (cuda): device arena: %s", kcu_errmsg(g->ctx));
            goto fail;
        }
    for (int i = 0; i < ts->n; i++) { /* the training set, uploaded once */
        const train_sample_t *s = &ts->s[i];
        g->emb[i] = kcu_upload_new(g->ctx, s->emb, SAM_EMB_C * EN);
        g->early[i] = g->emb[i] ? kcu_upload_new(g->ctx, s->early, (size_t)a->early_c * EN) : NULL;
        g->gt[i] = g->early[i] ? kcu_upload_new(g->ctx, s->gt, LRN) : NULL;
        if (!g->gt[i]) {
            err_set(err, ERR_NOMEM, "train (cuda): uploading sample %d: %s", i,
                    kcu_errmsg(g->ctx));
            goto fail;
        }
    }
    return g;
fail:
    train_cuda_destroy(&g);
    return NULL;
}

void train_cuda_destroy(train_cuda_t **gp)
{
    if (!gp || !*gp) return;
    train_cuda_t *g = *gp;
    adapter_cuda_destroy(&g->ad);
    samdec_cuda_destroy(&g->dec);
    kcu_ctx_destroy(&g->ctx); /* the arena: every device buffer above */
    free(g->emb);
    free(g->early);
    free(g->gt);
    free(g);
    *gp = NULL;
}

int train_cuda_zero_grad(train_cuda_t *g, err_t *err)
{
    return adapter_cuda_zero_grad(g->ad, err);
}

int train_cuda_sample(train_cuda_t *g, int i, const sam_point_t *pts, int n,
                      const float *mask_in, int oversample, float importance, uint64_t *rng,
                      float weight, int slot, err_t *err)
{
    if (i < 0 || i >= g->n || slot < 0 || slot >= g->slots)
        return err_set(err, ERR_INVALID, "train_cuda_sample: sample %d / slot %d out of range",
                       i, slot);
    kcu_ctx_t *c = g->ctx;
    int rc = 0;
    if (mask_in && (rc = kcu_upload(c, g->mask_in, mask_in, sizeof(float) * LRN)))
        return dev_fail(g, rc, "mask prompt upload", err);
    samdec_cuda_extra_t x = {.hq_token = adapter_cuda_hq_token(g->ad), .hq_out = g->hq_out,
                             .up = g->up, .trace = 1};
    if ((rc = samdec_cuda_forward(g->dec, g->emb[i], pts, n, mask_in ? g->mask_in : NULL, NULL,
                                  NULL, &x, err)))
        return rc;
    if ((rc = adapter_cuda_head_fwd(g->ad, g->hq_out, g->up, g->emb[i], g->early[i], g->logits,
                                    err)))
        return rc;
    rc = kcu_uncertain_points(c, g->pts, g->logits, LR, LR, g->P, oversample, importance, rng);
    if (rc == ERR_INVALID) return err_set(err, rc, "train: bad point sampling settings");
    if (!rc) rc = kcu_point_sample_fwd(c, g->lp, g->logits, g->pts, 1, LR, LR, g->P);
    if (!rc) rc = kcu_point_sample_fwd(c, g->tp, g->gt[i], g->pts, 1, LR, LR, g->P);
    if (!rc) rc = kcu_bce_dice_loss(c, g->loss3 + 3 * (size_t)slot, g->dlp, g->lp, g->tp, g->P,
                                    weight);
    if (!rc) rc = kcu_zero(c, g->dmap, sizeof(float) * LRN);
    if (!rc) rc = kcu_point_sample_bwd(c, g->dmap, g->dlp, g->pts, 1, LR, LR, g->P);
    if (rc) return dev_fail(g, rc, "point loss", err);
    if ((rc = adapter_cuda_head_bwd(g->ad, g->dmap, g->d_hq_out, err))) return rc;
    if ((rc = samdec_cuda_hq_backward(g->dec, g->d_hq_out, g->d_tok, err))) return rc;
    float *tg = adapter_cuda_hq_token_grad(g->ad);
    rc = kcu_add(c, tg, tg, g->d_tok, SAM_EMB_C);
    return rc ? dev_fail(g, rc, "hq token gradient", err) : 0;
}

int train_cuda_adam(train_cuda_t *g, float lr, float beta1, float beta2, float eps,
                    float weight_decay, int step, err_t *err)
{
    return adapter_cuda_adam_step(g->ad, lr, beta1, beta2, eps, weight_decay, step, err);
}

int train_cuda_sync(train_cuda_t *g, err_t *err)
{
    return kcu_sync(g->ctx, err);
}

int train_cuda_losses(train_cuda_t *g, float *loss, int n, err_t *err)
{
    if (n < 0 || n > g->slots)
        return err_set(err, ERR_INVALID, "train_cuda_losses: %d slots of %d", n, g->slots);
    float *h = malloc(sizeof(float) * 3 * (size_t)(n ? n : 1));
    if (!h) return err_set(err, ERR_NOMEM, "train_cuda_losses: out of memory");
    int rc = kcu_sync(g->ctx, err);
    if (!rc && (rc = kcu_download(g->ctx, h, g->loss3, sizeof(float) * 3 * (size_t)n)))
        dev_fail(g, rc, "loss download", err);
    for (int k = 0; !rc && k < n; k++) loss[k] = h[3 * k];
    free(h);
    return rc;
}

int train_cuda_download(train_cuda_t *g, adapter_t *a, err_t *err)
{
    return adapter_cuda_download(g->ad, a, err);
}

#else /* no CUDA */

train_cuda_t *train_cuda_new(sam_t *sam, const train_set_t *ts, const adapter_t *a, int P,
                             int slots, int tf32, err_t *err)
{
    (void)sam;
    (void)ts;
    (void)a;
    (void)P;
    (void)slots;
    (void)tf32;
    err_set(err, ERR_UNSUPPORTED, "train: this build has no CUDA kernels (device cuda)");
    return NULL;
}

void train_cuda_destroy(train_cuda_t **g)
{
    if (g) *g = NULL;
}

static int no_cuda(err_t *err)
{
    return err_set(err, ERR_UNSUPPORTED, "train: this build has no CUDA kernels (device cuda)");
}

int train_cuda_zero_grad(train_cuda_t *g, err_t *err)
{
    (void)g;
    return no_cuda(err);
}

int train_cuda_sample(train_cuda_t *g, int i, const sam_point_t *pts, int n,
                      const float *mask_in, int oversample, float importance, uint64_t *rng,
                      float weight, int slot, err_t *err)
{
    (void)g;
    (void)i;
    (void)pts;
    (void)n;
    (void)mask_in;
    (void)oversample;
    (void)importance;
    (void)rng;
    (void)weight;
    (void)slot;
    return no_cuda(err);
}

int train_cuda_adam(train_cuda_t *g, float lr, float beta1, float beta2, float eps,
                    float weight_decay, int step, err_t *err)
{
    (void)g;
    (void)lr;
    (void)beta1;
    (void)beta2;
    (void)eps;
    (void)weight_decay;
    (void)step;
    return no_cuda(err);
}

int train_cuda_sync(train_cuda_t *g, err_t *err)
{
    (void)g;
    return no_cuda(err);
}

int train_cuda_losses(train_cuda_t *g, float *loss, int n, err_t *err)
{
    (void)g;
    (void)loss;
    (void)n;
    return no_cuda(err);
}

int train_cuda_download(train_cuda_t *g, adapter_t *a, err_t *err)
{
    (void)g;
    (void)a;
    return no_cuda(err);
}

#endif
