/* adapter_cuda.h — the MoDA adapter head (adapter.h) on the GPU, from the kcu_ ops of
 * kernels/kn_cuda.h, for the GPU training step (train.c). Same computation as
 * adapter_head_fwd / adapter_head_bwd (the CPU reference it must match): hq_mlp → hyper[32],
 * fused = up + mask_feature(up) + embedding_encoder(emb) + compress(early), logits = hyper ·
 * fused; the backward accumulates every head parameter's gradient and returns d hq_out.
 *
 *   kcu_ctx_t *ctx = kcu_ctx_new(0, 512 << 20, KCU_TF32, &err);
 *   adapter_cuda_t *d = adapter_cuda_new(a, ctx, &err);      // uploads a->data
 *   adapter_cuda_zero_grad(d, &err);
 *   adapter_cuda_head_fwd(d, hq_out_dev, up_dev, emb_dev, early_dev, logits_dev, &err);
 *   adapter_cuda_head_bwd(d, dlogits_dev, d_hq_out_dev, &err);     // grad += ...
 *   adapter_cuda_adam_step(d, 1e-5f, 0.9f, 0.999f, 1e-8f, 0.0f, step, &err);
 *   adapter_cuda_download(d, a, &err);                         // parameters back to a
 *
 * Layout: parameters, gradient and the Adam moments m, v are flat device arrays of a->size
 * floats in adapter_t's exact parameter order and offsets (a->params), so an upload or a
 * download is one copy of a->data, and kcu_adam_step runs once over all of them. The maps
 * are NCHW (channel-major, as the decoder's `up` and the cached emb / early): the 3×3 convs
 * are cuDNN (kcu_conv2d_*), the transposed 2×2 convs kcu_convt2x2_*, LayerNorm2d and GELU
 * separate kcu_ ops (the GELU input is kept for its backward), hyper · fused and its two
 * gradients are cuBLAS GEMMs, hq_mlp kcu_linear_* + ReLU.
 *
 * Memory: adapter_cuda_new allocates the four flat arrays and every activation of one sample
 * (about 180 MB for early_c 160) from ctx's arena, once; it never resets the arena. ctx is
 * borrowed and must outlive d; the memory stays in the arena until its owner resets or
 * destroys ctx. Every *_dev pointer is device memory. Ops are queued on ctx's stream and
 * return without waiting, except adapter_cuda_download (waits). Errors: 0, ERR_INVALID,
 * ERR_NOMEM (arena too small), ERR_DEVICE (also sticky in ctx, reported by kcu_sync).
 * One thread at a time per adapter_cuda_t.
 *
 * In a build without CUDA every function exists and adapter_cuda_new fails with
 * ERR_UNSUPPORTED, so callers need no #ifdef.
 */
#ifndef MODA_ADAPTER_CUDA_H
#define MODA_ADAPTER_CUDA_H

#include "adapter.h"
#include "err.h"
#include "kn_cuda.h"

typedef struct adapter_cuda adapter_cuda_t;

/* Allocates parameters (uploaded from a->data), gradient, m, v (zero) and the activations
 * for an adapter shaped like a (borrowed; only its layout and data are read). Caller owns
 * result. NULL + err: ERR_UNSUPPORTED (no CUDA), ERR_NOMEM, ERR_DEVICE. */
adapter_cuda_t *adapter_cuda_new(const adapter_t *a, kcu_ctx_t *ctx, err_t *err);
void adapter_cuda_destroy(adapter_cuda_t **d);
/* Arena bytes adapter_cuda_new takes for an adapter shaped like a (alignment included). */
size_t adapter_cuda_arena_bytes(const adapter_t *a);

/* Parameters a->data → device (a must have d's layout; the Adam moments are kept). */
int adapter_cuda_upload(adapter_cuda_t *d, const adapter_t *a, err_t *err);
/* Device parameters → a->data (waits for the stream; reports a sticky error). */
int adapter_cuda_download(adapter_cuda_t *d, adapter_t *a, err_t *err);
/* Device arrays of a->size floats, borrowed (valid while d lives): parameters, gradient. */
float *adapter_cuda_params(adapter_cuda_t *d);
float *adapter_cuda_grad(adapter_cuda_t *d);
/* The hq token inside the parameters (device [256]) and its gradient slot. */
const float *adapter_cuda_hq_token(adapter_cuda_t *d);
float *adapter_cuda_hq_token_grad(adapter_cuda_t *d);

/* gradient = 0 (async). */
int adapter_cuda_zero_grad(adapter_cuda_t *d, err_t *err);
/* The Adam moments m = v = 0 (async): a fresh optimiser over the same parameters. */
int adapter_cuda_reset_adam(adapter_cuda_t *d, err_t *err);

/* adapter_head_fwd on the device: hq_out_dev [256], up_dev [32, 256, 256], emb_dev
 * [256, 64, 64], early_dev [early_c, 64, 64] (all borrowed and read again by the next
 * adapter_cuda_head_bwd, so they must stay unchanged until then) → logits_dev [256, 256].
 * Records the activations in d. */
int adapter_cuda_head_fwd(adapter_cuda_t *d, const float *hq_out_dev, const float *up_dev,
                          const float *emb_dev, const float *early_dev, float *logits_dev,
                          err_t *err);
/* adapter_head_bwd of the last forward: dlogits_dev [256, 256] in; the gradient of every
 * head parameter ACCUMULATED into adapter_cuda_grad (hq_token's slot untouched);
 * d_hq_out_dev [256] overwritten. ERR_STATE without a recorded forward. */
int adapter_cuda_head_bwd(adapter_cuda_t *d, const float *dlogits_dev, float *d_hq_out_dev,
                          err_t *err);

/* kcu_adam_step (= kn_adam_step) over all parameters with the gradient; step is 1-based. */
int adapter_cuda_adam_step(adapter_cuda_t *d, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int step, err_t *err);

#endif
