/* sam_cuda.h — the TinyViT-5M (MobileSAM) image encoder on the GPU, built from the kcu_ ops
 * of kernels/kn_cuda.h. Same computation as sam_tinyvit.c (tinyvit_forward): embedding
 * [256, 64, 64] and the early feature [160, 64, 64] per image, for a batch of B images.
 *
 * Weights are uploaded once (plain PyTorch layouts, plus the expanded attention bias tables
 * and the pad-token qkv rows computed on the host at load); activations for max_batch images
 * are allocated once in the context's arena and reused by every forward pass (kcu_mark /
 * kcu_reset). TF32 tensor-core GEMMs and convolutions (fp32 accumulation). One thread at a
 * time per encoder.
 *
 * In a build without CUDA every function exists and tinyvit_cuda_new fails with
 * ERR_UNSUPPORTED, so callers need no #ifdef.
 */
#ifndef MODA_SAM_CUDA_H
#define MODA_SAM_CUDA_H

#include "err.h"
#include "image.h"
#include "sam.h"
#include "wts.h"

typedef struct tinyvit_cuda tinyvit_cuda_t;

/* Loads the TinyViT weights of w (image_encoder.*; borrowed, read only here) onto CUDA device
 * `device` with room for max_batch images per forward (1..64). Caller owns result. NULL + err:
 * ERR_UNSUPPORTED (build without CUDA), ERR_DEVICE (no device / CUDA failure), ERR_NOMEM
 * (device memory), ERR_FORMAT (a missing or misshapen tensor, named). */
tinyvit_cuda_t *tinyvit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err);
void tinyvit_cuda_destroy(tinyvit_cuda_t **e);

/* x[B, 3, 1024, 1024] preprocessed encoder input (host) → emb[B, 256, 64, 64] (host) and,
 * when early is not NULL, early[B, 160, 64, 64] (host). 1 ≤ B ≤ max_batch. Returns 0 or
 * ERR_INVALID / ERR_DEVICE with the message in err. */
int tinyvit_cuda_forward(tinyvit_cuda_t *e, const float *x, int B, float *emb, float *early,
                         err_t *err);
/* Forward pass on the input already on the device from the last tinyvit_cuda_forward (no
 * copies in or out), waiting for the GPU: for timing the encoder alone. */
int tinyvit_cuda_forward_resident(tinyvit_cuda_t *e, int B, err_t *err);

/* The device embedding [256, 64, 64] of image i (0 ≤ i < max_batch) of the last forward
 * (tinyvit_cuda_forward / _resident / _encode), for a GPU decoder (samdec_cuda.h) to read
 * without a host round trip. Borrowed: valid while e lives and overwritten by the next
 * forward. The forward calls return after the GPU finished, so a decoder on another context
 * may read it at once, but it must be done (kcu_sync on its context) before the next
 * forward. NULL for a bad e or i. */
const float *tinyvit_cuda_emb_dev(const tinyvit_cuda_t *e, int i);

#endif
