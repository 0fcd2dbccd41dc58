/* enc_cuda.h — the GPU image encoder of a loaded model, whichever encoder it has: TinyViT-5M
 * (tinyvit_cuda, sam_cuda.h) or ViT-B/L/H (vit_cuda.h). The one place that chooses between
 * them, so callers (moda bench infer, moda segment) hold one handle and make one call per
 * operation.
 *
 * In a build without CUDA enc_cuda_new fails with ERR_UNSUPPORTED (the other functions
 * need a handle), so callers need no #ifdef. One thread at a time per encoder.
 */
#ifndef MODA_ENC_CUDA_H
#define MODA_ENC_CUDA_H

#include "err.h"
#include "image.h"
#include "sam.h"

typedef struct enc_cuda enc_cuda_t;

/* 1 when sam's encoder has a GPU implementation (tinyvit_5m, vit_b, vit_l, vit_h,
 * vit_custom), else 0. */
int enc_cuda_supported(const sam_t *sam);
/* The GPU encoder for sam's weights (borrowed from sam; sam must outlive the encoder only
 * for this call: weights are uploaded) on CUDA device `device`, batches up to max_batch.
 * Caller owns result. NULL + err: ERR_UNSUPPORTED (encoder without a GPU path, or a build
 * without CUDA) or the errors of tinyvit_cuda_new / vit_cuda_new. */
enc_cuda_t *enc_cuda_new(const sam_t *sam, int device, int max_batch, err_t *err);
void enc_cuda_destroy(enc_cuda_t **e);
/* x[B,3,1024,1024] (host) -> emb[B,256,64,64] (host) and, when early is not NULL,
 * early[B, enc_cuda_early_channels(e), 64, 64]. 1 <= B <= max_batch. */
int enc_cuda_forward(enc_cuda_t *e, const float *x, int B, float *emb, float *early,
                     err_t *err);
/* The forward on the input already on the device (no host copies), for timing. */
int enc_cuda_forward_resident(enc_cuda_t *e, int B, err_t *err);
/* The device embedding of image i of the last forward (see tinyvit_cuda_emb_dev). */
const float *enc_cuda_emb_dev(const enc_cuda_t *e, int i);
/* Channels of the early feature (160 for TinyViT-5M, C for a ViT). */
int enc_cuda_early_channels(const enc_cuda_t *e);
/* sam_encode on the GPU: preprocesses img into x[3,1024,1024] (caller-allocated, not NULL),
 * encodes it (B = 1) and fills out (emb, and early when want_early; free with
 * sam_embedding_free). Errors of prep_sam_input and enc_cuda_forward. */
int enc_cuda_encode(enc_cuda_t *e, const image_t *img, sam_embedding_t *out, float *x,
                    int want_early, err_t *err);

#endif
