/* enc_cuda.c — the GPU image encoder of a loaded model (enc_cuda.h): a handle holding either
 * a tinyvit_cuda_t or a vit_cuda_t, and one switch per operation. */
#include "enc_cuda.h"

#include <stdlib.h>
#include <string.h>

#include "preprocess.h"
#include "sam_cuda.h"
#include "vit_cuda.h"

struct enc_cuda {
    tinyvit_cuda_t *tv; /* exactly one of tv, vit is set */
    vit_cuda_t *vit;
};

static int is_vit(const char *name)
{
    return !strcmp(name, "vit_b") || !strcmp(name, "vit_l") || !strcmp(name, "vit_h") ||
           !strcmp(name, "vit_custom");
}

int enc_cuda_supported(const sam_t *sam)
{
    const char *n = sam ? sam_encoder_name(sam) : "";
    return !strcmp(n, "tinyvit_5m") || is_vit(n);
}

enc_cuda_t *enc_cuda_new(const sam_t *sam, int device, int max_batch, err_t *err)
{
    if (!sam) {
        err_set(err, ERR_INVALID, "enc_cuda_new: no model");
        return NULL;
    }
    if (!enc_cuda_supported(sam)) {
        err_set(err, ERR_UNSUPPORTED, "encoder '%s' has no GPU implementation",
                sam_encoder_name(sam));
        return NULL;
    }
    enc_cuda_t *e = calloc(1, sizeof *e);
    if (!e) {
        err_set(err, ERR_NOMEM, "enc_cuda: out of memory");
        return NULL;
    }
    if (is_vit(sam_encoder_name(sam))) e->vit = vit_cuda_new(sam_weights(sam), device, max_batch, err);
    else e->tv = tinyvit_cuda_new(sam_weights(sam), device, max_batch, err);
    if (!e->vit && !e->tv) {
        free(e);
        return NULL;
    }
    return e;
}

void enc_cuda_destroy(enc_cuda_t **pe)
{
    if (!pe || !*pe) return;
    tinyvit_cuda_destroy(&(*pe)->tv);
    vit_cuda_destroy(&(*pe)->vit);
    free(*pe);
    *pe = NULL;
}

int enc_cuda_forward(enc_cuda_t *e, const float *x, int B, float *emb, float *early, err_t *err)
{
    if (!e) return err_set(err, ERR_INVALID, "enc_cuda_forward: no encoder");
    return e->vit ? vit_cuda_forward(e->vit, x, B, emb, early, err)
                  : tinyvit_cuda_forward(e->tv, x, B, emb, early, err);
}

int enc_cuda_forward_resident(enc_cuda_t *e, int B, err_t *err)
{
    if (!e) return err_set(err, ERR_INVALID, "enc_cuda_forward_resident: no encoder");
    return e->vit ? vit_cuda_forward_resident(e->vit, B, err)
                  : tinyvit_cuda_forward_resident(e->tv, B, err);
}

const float *enc_cuda_emb_dev(const enc_cuda_t *e, int i)
{
    if (!e) return NULL;
    return e->vit ? vit_cuda_emb_dev(e->vit, i) : tinyvit_cuda_emb_dev(e->tv, i);
}

int enc_cuda_early_channels(const enc_cuda_t *e)
{
    if (!e) return 0;
    return e->vit ? vit_cuda_early_channels(e->vit) : 160;
}

int enc_cuda_encode(enc_cuda_t *e, const image_t *img, sam_embedding_t *out, float *x,
                    int want_early, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!e || !img || !x) return err_set(err, ERR_INVALID, "enc_cuda_encode: NULL argument");
    int rc = prep_sam_input(img, x, NULL, &out->info, err);
    if (rc) return rc;
    int ec = enc_cuda_early_channels(e);
    out->emb = malloc(sizeof(float) * SAM_EMB_C * SAM_EMB * SAM_EMB);
    if (want_early) {
        out->early_c = ec;
        out->early = malloc(sizeof(float) * (size_t)ec * SAM_EMB * SAM_EMB);
    }
    if (!out->emb || (want_early && !out->early)) {
        sam_embedding_free(out);
        return err_set(err, ERR_NOMEM, "enc_cuda_encode: out of memory for the embedding");
    }
    rc = enc_cuda_forward(e, x, 1, out->emb, out->early, err);
    if (rc) sam_embedding_free(out);
    return rc;
}
