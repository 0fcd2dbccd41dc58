/* sam.h — the public SAM model: weights file in, image embedding and masks out.
 *
 *   sam_t *s = sam_load(path, &err);             // encoder chosen by metadata moda.encoder
 *   sam_embedding_t emb; sam_encode(s, img, &emb, NULL, &err);
 *   sam_prompt_t p = {.points = pts, .n_points = 1};
 *   sam_result_t r; sam_predict(s, &emb, &p, &r, &err);   // r.mask[best]: h×w, 0/255
 *   sam_result_free(&r); sam_embedding_free(&emb); sam_destroy(&s);
 *
 * Glues the parts of sam_parts.h with preprocess.h and postprocess.h, following the
 * official SAM predictor with the ONNX export's single-mask rule (MODEL.md). Prompts are in
 * ORIGINAL image pixels. A sam_t is used by one thread at a time (parts reuse arenas);
 * embeddings and results are plain memory owned by the caller.
 */
#ifndef MODA_SAM_H
#define MODA_SAM_H

#include <stdint.h>

#include "err.h"
#include "image.h"
#include "preprocess.h"
#include "sam_parts.h"

typedef struct sam sam_t;

/* Opens a weights file (wts.h) and builds the encoder named by its metadata
 * "moda.encoder" (tinyvit_5m; vit_b/l/h where built) plus the prompt encoder and mask
 * decoder. Caller owns result. NULL + err: ERR_NOTFOUND/ERR_IO (file), ERR_FORMAT (not a
 * weights file, missing/misshapen tensor — the message names it), ERR_UNSUPPORTED (encoder). */
sam_t *sam_load(const char *path, err_t *err);
void sam_destroy(sam_t **s);
/* "tinyvit_5m", "vit_b", ... (borrowed, valid while s lives). */
const char *sam_encoder_name(const sam_t *s);
/* Channels of the early feature written by sam_encode (160 for TinyViT-5M). */
int sam_early_channels(const sam_t *s);
/* The loaded weights (borrowed). */
const wts_t *sam_weights(const sam_t *s);

typedef struct sam_embedding {
    prep_info_t info; /* original and resized sizes */
    float *emb;       /* [256,64,64], owned */
    float *early;     /* [early_c,64,64] or NULL, owned */
    int early_c;
} sam_embedding_t;

/* Preprocesses img (gray or RGB) and runs the encoder. x (may be NULL) receives the
 * [3,1024,1024] encoder input (caller-allocated). want_early: also fill out->early.
 * out is overwritten (free it with sam_embedding_free). */
int sam_encode(sam_t *s, const image_t *img, sam_embedding_t *out, float *x, int want_early,
               err_t *err);
/* Runs the encoder on an already preprocessed x[3,1024,1024] with sizes info. */
int sam_encode_input(sam_t *s, const float *x, const prep_info_t *info, sam_embedding_t *out,
                     int want_early, err_t *err);
/* sam_encode with the early feature plus the MoDA selector taps of the same single encoder
 * pass (selector.h; taps caller-allocated, sam_taps_floats(s) floats). emb and early are
 * bit-identical to sam_encode's. ERR_UNSUPPORTED when the encoder has no selector support. */
int sam_encode_taps(sam_t *s, const image_t *img, sam_embedding_t *out, float *taps,
                    err_t *err);
/* Floats of one taps buffer for this model (0: no selector support, e.g. ViT encoders). */
size_t sam_taps_floats(const sam_t *s);
/* Frees the buffers; NULL-safe; leaves *e zeroed. */
void sam_embedding_free(sam_embedding_t *e);

#define SAM_MAX_POINTS 64

typedef struct sam_prompt {
    const float *points; /* n_points × {x, y, label}, original pixels; label 1 fg / 0 bg */
    int n_points;
    int has_box;
    float box[4];         /* x0, y0, x1, y1 in original pixels */
    const float *mask_in; /* [256,256] logits from an earlier prediction, or NULL */
    int multimask;        /* 0: one mask by the single-mask rule; 1: masks 1..3 */
} sam_prompt_t;

typedef struct sam_result {
    int n;                  /* masks returned: 1, or 3 with multimask */
    int h, w;               /* original size */
    int index[3];           /* mask token index (0..3) of each returned mask */
    float iou[3];           /* predicted IoU */
    float stability[3];     /* area(logits > 1) / area(logits > -1) at the original size */
    int best;               /* 0..n-1: highest predicted IoU */
    float *lowres;          /* n × [256,256] logits, owned */
    uint8_t *mask;          /* n × [h,w], 0 or 255, owned */
    float iou_all[SAM_NMASK]; /* the decoder's 4 IoU predictions */
} sam_result_t;

/* Decodes masks for one prompt. Points/box must lie inside the image (0 ≤ x ≤ w,
 * 0 ≤ y ≤ h), labels 0 or 1, x0 ≤ x1 and y0 ≤ y1, at least one point or a box:
 * otherwise ERR_INVALID / ERR_RANGE naming the prompt. out is overwritten (free it with
 * sam_result_free). */
int sam_predict(sam_t *s, const sam_embedding_t *emb, const sam_prompt_t *p, sam_result_t *out,
                err_t *err);
void sam_result_free(sam_result_t *r);
/* sam_predict's second half, for decoder outputs computed elsewhere (e.g. the GPU decoder,
 * samdec_cuda.h): the result for prompt p from all[4,256,256] low-res logits and iou_all[4]
 * of a decoder run on the n points sam_prompt_points gave for p. out is overwritten. */
int sam_result_from_lowres(const prep_info_t *info, const sam_prompt_t *p, int n,
                           const float *all, const float iou_all[SAM_NMASK], sam_result_t *out,
                           err_t *err);

/* The decoder's prompt points (1024 frame) for p, exactly as passed to samdec_forward:
 * mapped points, then box corners (labels 2, 3), else the padding point (0, 0, −1).
 * Returns the count (≤ SAM_MAX_POINTS + 2) or a negative ERR_* for invalid prompts. */
int sam_prompt_points(const prep_info_t *info, const sam_prompt_t *p,
                      sam_point_t out[SAM_MAX_POINTS + 2], err_t *err);

#endif
