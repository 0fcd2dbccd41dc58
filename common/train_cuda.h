/* train_cuda.h — the GPU backend of the adapter training step (train.c's seam; not used
 * elsewhere). train.c keeps the one recipe loop (sample order, prompts, lr schedule, stats,
 * progress) and the host random stream; per sample it hands the drawn prompt here, and per
 * batch the Adam update:
 *
 *   train_cuda_t *g = train_cuda_new(sam, ts, a, P, slots, 1, &err);  // set uploaded once
 *   train_cuda_zero_grad(g, &err);
 *   train_cuda_sample(g, i, pts, n, mask_in, oversample, importance, &rng, 1.0f / nb, slot, &err);
 *   train_cuda_adam(g, lr, b1, b2, eps, wd, step, &err);
 *   train_cuda_losses(g, loss, nslots, &err);          // once per epoch: the one sync
 *   train_cuda_download(g, a, &err);                   // trained parameters back to a
 *
 * One sample on the device: samdec_cuda_forward with the adapter's hq token (hq_out, `up`,
 * trace) → adapter_cuda_head_fwd → kcu_uncertain_points (the random numbers drawn from the
 * caller's host rng in kn_uncertain_points's order, so CPU and GPU runs pick the same
 * candidates) → kcu_point_sample_fwd on logits and GT → kcu_bce_dice_loss (weighted loss
 * into a device slot) → kcu_point_sample_bwd → adapter_cuda_head_bwd →
 * samdec_cuda_hq_backward → hq_token's gradient. Gradients accumulate on the device until
 * train_cuda_adam.
 *
 * Memory: one CUDA context on device 0 whose arena holds the decoder, the adapter's
 * parameters / gradient / Adam moments and head activations, and every sample's emb, early
 * and GT map (device-resident training set: about 7 MB per TinyViT sample). The host set ts
 * must stay alive and unchanged while g lives (prompts are drawn from it; i indexes it).
 * Errors: ERR_UNSUPPORTED (build without CUDA), ERR_DEVICE (no device, failed op),
 * ERR_NOMEM, ERR_INVALID. One thread at a time.
 */
#ifndef MODA_TRAIN_CUDA_H
#define MODA_TRAIN_CUDA_H

#include <stdint.h>

#include "adapter.h"
#include "err.h"
#include "sam.h"
#include "train.h"

typedef struct train_cuda train_cuda_t;

/* A device copy of a's parameters (fresh Adam moments) and of every sample of ts, for P
 * loss points per sample and `slots` loss slots. sam's weights give the frozen decoder.
 * tf32: the head may use TF32 (train_cfg_t.tf32). Caller owns result. */
train_cuda_t *train_cuda_new(sam_t *sam, const train_set_t *ts, const adapter_t *a, int P,
                             int slots, int tf32, err_t *err);
void train_cuda_destroy(train_cuda_t **g);

int train_cuda_zero_grad(train_cuda_t *g, err_t *err);
/* Forward + loss + backward of sample i (of the ts given at creation) with prompt pts[n]
 * (host) and mask_in (host [256, 256] logits or NULL); the loss weighted by `weight` goes
 * to device slot `slot` (0 ≤ slot < slots), the gradient is accumulated. rng advances exactly
 * as kn_uncertain_points advances it. Queued: returns before the device finishes. */
int train_cuda_sample(train_cuda_t *g, int i, const sam_point_t *pts, int n,
                      const float *mask_in, int oversample, float importance, uint64_t *rng,
                      float weight, int slot, err_t *err);
/* kcu_adam_step over all parameters with the accumulated gradient (step 1-based). */
int train_cuda_adam(train_cuda_t *g, float lr, float beta1, float beta2, float eps,
                    float weight_decay, int step, err_t *err);
/* Waits for the device (reports a failed op). */
int train_cuda_sync(train_cuda_t *g, err_t *err);
/* Waits, then copies the weighted losses of slots 0..n-1 into loss[n] (host). */
int train_cuda_losses(train_cuda_t *g, float *loss, int n, err_t *err);
/* Waits, then copies the device parameters into a->data. */
int train_cuda_download(train_cuda_t *g, adapter_t *a, err_t *err);

#endif
