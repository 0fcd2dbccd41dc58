/* vit_cuda.h — the official SAM ViT-B/L/H image encoder on the GPU (kcu_ ops), the same
 * computation as vit_forward (sam_vit.c, the CPU reference) for a batch of images.
 *
 *   vit_cuda_t *e = vit_cuda_new(sam_weights(sam), 0, 8, &err);   // uploads the weights
 *   vit_cuda_forward(e, x, B, emb, early, &err);                   // x[B,3,1024,1024] host
 *   vit_cuda_destroy(&e);
 *
 * The configuration (C, depth, heads, head dim, MLP width, window side of every block, the
 * first global block) comes from the weights through vit_weights_get, exactly as vit_new
 * reads it, so B, L, H and small test configurations share this code. Numerics: fp32
 * activations, GEMMs and convolutions in TF32 (fp32 accumulation); embedding and early
 * feature within 2e-3 relative L2 of vit_forward (tests/gpu/test_vit_cuda.c).
 * Device memory: the weights (ViT-B ~360 MB, ViT-H ~2.5 GB) plus, per image of max_batch,
 * about (3·2^20 + 4096·(C + 256) + 4900·2C + max(4096·mlp, 4900·3C) + 4096·256) floats
 * (ViT-B ~160 MB) in one arena; global-attention rel-pos tables (B·heads·4096·128 floats)
 * live in the context's workspace.
 * In a build without CUDA every function fails with ERR_UNSUPPORTED (vit_cuda_new returns
 * NULL). One caller at a time per vit_cuda_t.
 */
#ifndef MODA_VIT_CUDA_H
#define MODA_VIT_CUDA_H

#include "err.h"
#include "wts.h"

typedef struct vit_cuda vit_cuda_t;

/* Checks the weights (names and shapes, vit_weights_get), uploads them to GPU `device` and
 * reserves activations for batches up to max_batch (1..64). Caller owns result; NULL + err:
 * ERR_NOTFOUND / ERR_FORMAT / ERR_UNSUPPORTED (weights), ERR_DEVICE (no GPU, driver),
 * ERR_NOMEM (device memory), ERR_INVALID (arguments). */
vit_cuda_t *vit_cuda_new(const wts_t *w, int device, int max_batch, err_t *err);
void vit_cuda_destroy(vit_cuda_t **e);
/* x[B,3,1024,1024] (host, preprocessed as for vit_forward) -> emb[B,256,64,64] (host) and,
 * when early is not NULL, early[B,C,64,64] (host; the tokens after the first global block,
 * as vit_forward). 1 <= B <= max_batch. Synchronous. */
int vit_cuda_forward(vit_cuda_t *e, const float *x, int B, float *emb, float *early,
                     err_t *err);
/* The forward on whatever input is already on the device (no host copies), for timing. */
int vit_cuda_forward_resident(vit_cuda_t *e, int B, err_t *err);
/* The device embedding [256, 64, 64] of image i (0 <= i < max_batch) of the last forward,
 * for a GPU decoder to read without a host round trip (as tinyvit_cuda_emb_dev). Borrowed:
 * overwritten by the next forward. NULL for a bad e or i (and without CUDA). */
const float *vit_cuda_emb_dev(const vit_cuda_t *e, int i);
/* C: channels of the early feature (0 for NULL). */
int vit_cuda_early_channels(const vit_cuda_t *e);

#endif
