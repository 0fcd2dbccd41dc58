/* samdec_cuda.h — the SAM prompt encoder + two-way mask decoder on the GPU, built from the
 * kcu_ ops of kernels/kn_cuda.h. Same computation as sam_decoder.c (samdec_forward_ex, the
 * CPU reference it must match), including MoDA's one-way hq token and the backward of its
 * path (samdec_hq_backward), so inference and adapter training run the same decoder.
 *
 *   kcu_ctx_t *ctx = kcu_ctx_new(0, 512 << 20, KCU_TF32, &err);
 *   samdec_cuda_t *d = samdec_cuda_new(sam_weights(sam), ctx, &err);
 *   samdec_cuda_forward(d, emb_dev, pts, n, NULL, lowres_dev, iou_dev, NULL, &err);
 *   kcu_sync(ctx, &err); kcu_download(...);
 *
 * Memory: samdec_cuda_new uploads the decoder weights (mask_decoder.*, prompt_encoder.*)
 * and allocates every activation (for up to SAMDEC_CUDA_MAX_PTS prompt points) from ctx's
 * arena, once; it never resets the arena (about 71 MB: weights 16 MB, the rest activations,
 * so give ctx 128 MB). ctx is borrowed and must outlive d. Every pointer argument named *_dev
 * or documented "device" is device memory. The decoder's GEMMs and convolutions run in plain
 * fp32 whatever ctx's TF32 setting (restored on return), so it matches the CPU decoder to
 * float rounding.
 *
 * Ops are queued on ctx's stream and return without waiting (except where a small host →
 * device upload of the prompt needs its host buffer; that is internal). Errors: 0 or
 * ERR_INVALID (bad argument, message names it) / ERR_DEVICE (a failed launch; also sticky in
 * ctx, reported by kcu_sync). One thread at a time per decoder.
 *
 * In a build without CUDA every function exists and samdec_cuda_new fails with
 * ERR_UNSUPPORTED, so callers need no #ifdef.
 */
#ifndef MODA_SAMDEC_CUDA_H
#define MODA_SAMDEC_CUDA_H

#include "err.h"
#include "kn_cuda.h"
#include "sam.h"
#include "sam_parts.h"
#include "wts.h"

#define SAMDEC_CUDA_MAX_PTS 16 /* prompt points per forward, padding and box corners included */

typedef struct samdec_cuda samdec_cuda_t;

/* Uploads the decoder weights of w (borrowed, read only here) into ctx's arena and allocates
 * the activations. Caller owns result. NULL + err: ERR_UNSUPPORTED (build without CUDA),
 * ERR_FORMAT (missing or misshapen tensor, named), ERR_NOMEM (arena too small), ERR_DEVICE. */
samdec_cuda_t *samdec_cuda_new(const wts_t *w, kcu_ctx_t *ctx, err_t *err);
void samdec_cuda_destroy(samdec_cuda_t **d);

/* The MoDA extras, as samdec_extra_t but on the device. */
typedef struct samdec_cuda_extra {
    const float *hq_token; /* device [256] the extra one-way token, or NULL (no hq token) */
    float *hq_out;         /* device [256] its state after norm_final_attn (with hq_token) */
    float *up;             /* device [32, 256, 256] the upscaled image feature (CHW), or NULL */
    int trace;             /* != 0: record the hq path for samdec_cuda_hq_backward */
} samdec_cuda_extra_t;

/* samdec_forward_ex on the GPU: emb_dev [256, 64, 64] (device), pts[n] (HOST, 1 ≤ n ≤
 * SAMDEC_CUDA_MAX_PTS, as samdec_forward), mask_in_dev [256, 256] logits (device) or NULL.
 * Writes lowres_dev [4, 256, 256] and iou_dev [4] (device; either may be NULL when not
 * wanted). x may be NULL (plain samdec_forward). */
int samdec_cuda_forward(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts, int n,
                        const float *mask_in_dev, float *lowres_dev, float *iou_dev,
                        const samdec_cuda_extra_t *x, err_t *err);

/* samdec_hq_backward on the GPU for the last forward with x->trace set: d_hq_out_dev [256]
 * in, d_hq_token_dev [256] out (overwritten). ERR_STATE when no traced forward is recorded. */
int samdec_cuda_hq_backward(samdec_cuda_t *d, const float *d_hq_out_dev, float *d_hq_token_dev,
                            err_t *err);

/* sam_predict on the GPU: decodes prompt p (original pixels, mapped with info, as
 * sam_prompt_points) on emb_dev (device [256, 64, 64], e.g. tinyvit_cuda_emb_dev) into the
 * decoder's own device buffers, waits, downloads the 4 low-res masks and fills out exactly as
 * sam_predict does (sam_result_from_lowres). p->mask_in is HOST memory here. ERR_RANGE when
 * p needs more than SAMDEC_CUDA_MAX_PTS decoder points (use the CPU decoder). */
int samdec_cuda_predict(samdec_cuda_t *d, const float *emb_dev, const prep_info_t *info,
                        const sam_prompt_t *p, sam_result_t *out, err_t *err);
/* samdec_cuda_forward into the decoder's own low-res and IoU buffers, waiting for the GPU
 * (no host copies): for timing the decoder alone, like tinyvit_cuda_forward_resident. */
int samdec_cuda_forward_resident(samdec_cuda_t *d, const float *emb_dev, const sam_point_t *pts,
                                 int n, err_t *err);

#endif
