/* bankrun_cuda.c — the GPU side of bankrun (bankrun_cuda.h): the frozen decoder
 * (samdec_cuda) and one adapter head (adapter_cuda) on one stream. The order of operations
 * is adapter_forward's (adapter.c, the CPU reference): decoder with the hq token, then the
 * head on its hq_out and `up`.
 */
#include "bankrun_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "adapter_cuda.h"
#include "kn_cuda.h"
#include "samdec_cuda.h"

#if defined(MODA_HAVE_CUDA)

#define LRN ((size_t)SAM_LOWRES * SAM_LOWRES)
#define EN ((size_t)SAM_EMB * SAM_EMB)
#define DEC_ARENA ((size_t)128 << 20) /* samdec_cuda: 71 MB measured (its header) */

struct bankrun_cuda {
    kcu_ctx_t *ctx;
    samdec_cuda_t *dec;
    adapter_cuda_t *ad;
    int early_c;
    float *emb, *early;   /* [256, 64, 64], [early_c, 64, 64]: the host embedding uploaded */
    float *up, *hq_out;   /* [32, 256, 256], [256] */
    float *logits, *iou;  /* [256, 256], [4] */
};

static int dev_fail(bankrun_cuda_t *g, int rc, const char *what, err_t *err)
{
    return err_set(err, rc ? rc : ERR_DEVICE, "bankrun (cuda): %s: %s", what, kcu_errmsg(g->ctx));
}

bankrun_cuda_t *bankrun_cuda_new(const sam_t *sam, int device, int early_c, err_t *err)
{
    if (!sam || early_c < 1) {
        err_set(err, ERR_INVALID, "bankrun_cuda_new: bad arguments");
        return NULL;
    }
    bankrun_cuda_t *g = calloc(1, sizeof *g);
    adapter_t *shape = adapter_new(early_c, err); /* layout only, for the arena size */
    if (!g || !shape) {
        if (!g) err_set(err, ERR_NOMEM, "bankrun_cuda_new: out of memory");
        free(g);
        adapter_destroy(&shape);
        return NULL;
    }
    g->early_c = early_c;
    size_t bufs = ((size_t)SAM_EMB_C + early_c) * EN + (ADP_HYP + 1) * LRN + SAM_EMB_C + SAM_NMASK;
    size_t arena = DEC_ARENA + adapter_cuda_arena_bytes(shape) + sizeof(float) * bufs + (8 << 10);
    /* plain fp32 (no TF32): the served masks match the CPU path to float rounding */
    if (!(g->ctx = kcu_ctx_new(device, arena, 0, err))) goto fail;
    if (!(g->dec = samdec_cuda_new(sam_weights(sam), g->ctx, err))) goto fail;
    if (!(g->ad = adapter_cuda_new(shape, g->ctx, err))) goto fail;
    float **b[] = {&g->emb, &g->early, &g->up, &g->hq_out, &g->logits, &g->iou};
    size_t nb[] = {SAM_EMB_C * EN, (size_t)early_c * EN, ADP_HYP * LRN, SAM_EMB_C, LRN, SAM_NMASK};
    for (int i = 0; i < 6; i++)
        if (!(*b[i] = kcu_allocf(g->ctx, nb[i]))) {
            err_set(err, ERR_NOMEM, "bankrun (cuda): device arena: %s", kcu_errmsg(g->ctx));
            goto fail;
        }
    adapter_destroy(&shape);
    return g;
fail:
    adapter_destroy(&shape);
    bankrun_cuda_destroy(&g);
    return NULL;
}

void bankrun_cuda_destroy(bankrun_cuda_t **gp)
{
    if (!gp || !*gp) return;
    bankrun_cuda_t *g = *gp;
    adapter_cuda_destroy(&g->ad);
    samdec_cuda_destroy(&g->dec);
    kcu_ctx_destroy(&g->ctx); /* the arena: every device buffer above */
    free(g);
    *gp = NULL;
}

/* *e = the embedding the decoder reads: emb_dev, or emb->emb uploaded into g->emb. */
static int emb_on_device(bankrun_cuda_t *g, const sam_embedding_t *emb, const float *emb_dev,
                         const float **e, err_t *err)
{
    *e = emb_dev;
    if (emb_dev) return 0;
    if (!emb->emb) return err_set(err, ERR_INVALID, "bankrun (cuda): no embedding");
    int rc = kcu_upload(g->ctx, g->emb, emb->emb, sizeof(float) * SAM_EMB_C * EN);
    if (rc) return dev_fail(g, rc, "embedding upload", err);
    *e = g->emb;
    return 0;
}

int bankrun_cuda_adapter(bankrun_cuda_t *g, const adapter_t *a, int reload,
                         const sam_embedding_t *emb, const float *emb_dev, const sam_point_t *pts,
                         int n, float *logits, float *iou, err_t *err)
{
    if (!g || !a || !emb || !emb->early || !pts || !logits)
        return err_set(err, ERR_INVALID, "bankrun_cuda_adapter: NULL argument");
    if (a->early_c != g->early_c || emb->early_c != g->early_c)
        return err_set(err, ERR_INVALID, "bankrun_cuda_adapter: %d early channels (adapter %d, "
                       "embedding %d)", g->early_c, a->early_c, emb->early_c);
    if (n < 1 || n > SAMDEC_CUDA_MAX_PTS)
        return err_set(err, ERR_RANGE, "bankrun_cuda_adapter: %d decoder points (the GPU decoder "
                       "takes 1..%d)", n, SAMDEC_CUDA_MAX_PTS);
    const float *e;
    int rc = reload ? adapter_cuda_upload(g->ad, a, err) : 0;
    if (rc || (rc = emb_on_device(g, emb, emb_dev, &e, err))) return rc;
    if ((rc = kcu_upload(g->ctx, g->early, emb->early, sizeof(float) * g->early_c * EN)))
        return dev_fail(g, rc, "early feature upload", err);
    samdec_cuda_extra_t x = {.hq_token = adapter_cuda_hq_token(g->ad), .hq_out = g->hq_out,
                             .up = g->up};
    if ((rc = samdec_cuda_forward(g->dec, e, pts, n, NULL, NULL, g->iou, &x, err))) return rc;
    if ((rc = adapter_cuda_head_fwd(g->ad, g->hq_out, g->up, e, g->early, g->logits, err)))
        return rc;
    if ((rc = kcu_sync(g->ctx, err))) return rc;
    float io[SAM_NMASK];
    if ((rc = kcu_download(g->ctx, logits, g->logits, sizeof(float) * LRN)) ||
        (rc = kcu_download(g->ctx, io, g->iou, sizeof io)))
        return dev_fail(g, rc, "download", err);
    if (iou) *iou = io[0];
    return 0;
}

int bankrun_cuda_predict(bankrun_cuda_t *g, const sam_embedding_t *emb, const float *emb_dev,
                         const sam_prompt_t *p, sam_result_t *out, err_t *err)
{
    if (!g || !emb || !p || !out) return err_set(err, ERR_INVALID, "bankrun_cuda_predict: NULL argument");
    const float *e;
    int rc = emb_on_device(g, emb, emb_dev, &e, err);
    return rc ? rc : samdec_cuda_predict(g->dec, e, &emb->info, p, out, err);
}

#else /* no CUDA */

static int no_cuda(err_t *err)
{
    return err_set(err, ERR_UNSUPPORTED, "bankrun: this build has no CUDA kernels (device cuda)");
}

bankrun_cuda_t *bankrun_cuda_new(const sam_t *sam, int device, int early_c, err_t *err)
{
    (void)sam;
    (void)device;
    (void)early_c;
    no_cuda(err);
    return NULL;
}

void bankrun_cuda_destroy(bankrun_cuda_t **g)
{
    if (g) *g = NULL;
}

int bankrun_cuda_adapter(bankrun_cuda_t *g, const adapter_t *a, int reload,
                         const sam_embedding_t *emb, const float *emb_dev, const sam_point_t *pts,
                         int n, float *logits, float *iou, err_t *err)
{
    (void)g;
    (void)a;
    (void)reload;
    (void)emb;
    (void)emb_dev;
    (void)pts;
    (void)n;
    (void)logits;
    (void)iou;
    return no_cuda(err);
}

int bankrun_cuda_predict(bankrun_cuda_t *g, const sam_embedding_t *emb, const float *emb_dev,
                         const sam_prompt_t *p, sam_result_t *out, err_t *err)
{
    (void)g;
    (void)emb;
    (void)emb_dev;
    (void)p;
    (void)out;
    return no_cuda(err);
}

#endif
