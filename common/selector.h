/* selector.h — MoDA domain selector: learned tokens through the frozen encoder blocks.
 *
 * What: one Global Feature Token (GFT, row 0) and 9 Global Assistant Tokens run through the
 * frozen TinyViT stage-2 blocks (6, C=160) and stage-3 blocks (2, C=320) next to the patch
 * tokens, with a learned 160→320 linear map ("merge") between the stages. The GFT output q
 * gives one logit per known domain through a linear layer ("keys"); softmax → probs, argmax
 * → adapter (../shared/design/MODA.md "Selector", points 1 and 2; docs/moda.md "Selector").
 *
 * Per block, for the token rows t only (the block's own frozen weights):
 *   t = t + proj(Attn(q = qkv(LN1(t)).q ; k/v = [patch k/v (taps) ; qkv(LN1(t)).k/v]))
 *   t = t + fc2(GELU(fc1(LN2(t))))
 * no attention bias (position) and no local conv for token rows. Patch tokens never attend
 * to the tokens, so the image features are those of a plain forward pass: the patch k/v of
 * every block come from the one encoder pass (tinyvit_forward_taps, sam_parts.h) as
 * constants. Gradients reach the tokens through the frozen blocks (token rows only).
 *
 * Taps: one contiguous float buffer, per block in order (stage 0 blocks then stage 1
 * blocks) [n_patch, 2C] rows = [k (C) | v (C)], head h at columns h*head_dim.
 * For TinyViT: TINYVIT_TAPS_FLOATS floats (52 MB per image).
 *
 * Parameters (bank tensors "selector.<name>", F32):
 *   tokens [n_tok, C0], merge.weight [C1, C0], merge.bias [C1],
 *   keys.weight [n_domains, C1], keys.bias [n_domains].
 * Key i is domain i of the caller's domain list (for a bank: abank_t.domains order).
 *
 * Threading: one call at a time per selector object (internal activation buffers).
 */
#ifndef MODA_SELECTOR_H
#define MODA_SELECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "adapter_bank.h"
#include "err.h"
#include "image.h"
#include "sam_parts.h"
#include "wts.h"

#define SELECTOR_NTOK 10

typedef struct selector selector_t;

/* Frozen weights of one block (borrowed; PyTorch layouts). qkv_w [3C, C] and qkv_b [3C]
 * in TinyViT's per-head layout: head h owns rows h*3d .. h*3d+3d as [q (d) | k (d) | v (d)].
 * proj [C, C], fc1 [4C, C], fc2 [C, 4C]; ln1 = attn.norm, ln2 = mlp.norm (eps 1e-5). */
typedef struct selector_block_w {
    const float *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    const float *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} selector_block_w_t;

typedef struct selector_cfg {
    int n_patch;  /* patch tokens per block (TinyViT: 4096) */
    int n_tok;    /* learned tokens, row 0 = GFT (TinyViT: 10) */
    int head_dim; /* per-head channels (TinyViT: 32) */
    int dim[2];   /* channels of stage 0 and stage 1 (TinyViT: 160, 320) */
    int depth[2]; /* blocks per stage (TinyViT: 6, 2) */
} selector_cfg_t;

/* Selector on the TinyViT weights of w (borrowed: must outlive the selector), reading
 * image_encoder.layers.{2,3}.blocks.{i}.{attn.{norm,qkv,proj},mlp.{norm,fc1,fc2}}.*.
 * No parameters yet: call selector_init or selector_load_from_bank. Caller owns result;
 * NULL + err (names the missing/misshapen tensor) on failure. */
selector_t *selector_new(const wts_t *w, err_t *err);
/* Same on any configuration (tests): blocks[depth[0] + depth[1]] (copied struct, pointed
 * weights borrowed). Dimensions must be multiples of head_dim. */
selector_t *selector_new_custom(const selector_cfg_t *cfg, const selector_block_w_t *blocks,
                                err_t *err);
void selector_destroy(selector_t **s);
const selector_cfg_t *selector_config(const selector_t *s);
/* Floats of one taps buffer for this configuration. */
size_t selector_taps_floats(const selector_t *s);

/* Fresh parameters for n_domains (>= 1) classes from seed: tokens N(0, 1), merge and keys
 * weights U(±1/sqrt(fan_in)) (PyTorch Linear default), biases 0. Resets Adam state. */
int selector_init(selector_t *s, uint64_t seed, int n_domains, err_t *err);
int selector_n_domains(const selector_t *s); /* 0 before init/load */

/* probs[n_domains] (caller-allocated) for one image's taps (borrowed). */
int selector_forward(selector_t *s, const float *taps, float *probs, err_t *err);
/* argmax of selector_forward; *domain and *p_top (may be NULL). */
int selector_predict(selector_t *s, const float *taps, int *domain, float *p_top, err_t *err);

/* Training (Adam, betas 0.9/0.999, eps 1e-8, no weight decay; batch `batch`, per-sample
 * cross-entropy weighted 1/batch; epoch shuffles from seed). taps[n] borrowed buffers,
 * labels[n] in [0, n_domains). stats (may be NULL) receives the epoch-mean CE of the first
 * and last epoch, the training accuracy after training and the wall time. */
typedef struct selector_stats {
    double ce_first, ce_last, train_acc, seconds;
    int steps;
} selector_stats_t;
int selector_train(selector_t *s, const float *const *taps, const int *labels, int n, int epochs,
                   int batch, float lr, uint64_t seed, selector_stats_t *stats, err_t *err);

/* keys_only != 0: selector_train updates only keys.* (tokens and merge stay at their
 * values), the public CoSAM behaviour (MODA.md point 1), for comparison. Default 0. */
void selector_set_keys_only(selector_t *s, int keys_only);

/* Low-level (tests, custom loops): all parameters in one flat buffer (order: tokens,
 * merge.weight, merge.bias, keys.weight, keys.bias) and its gradient buffer (same layout;
 * both borrowed, valid until the next init/load). selector_grad ACCUMULATES weight ·
 * d CE(label) / d params into the gradient buffer and returns the loss in *loss. */
float *selector_params(selector_t *s, size_t *n);
float *selector_grads(selector_t *s, size_t *n);
void selector_zero_grad(selector_t *s);
int selector_grad(selector_t *s, const float *taps, int label, float weight, float *loss,
                  err_t *err);

/* Writes the parameters as selector.* tensors (replacing any there). */
int selector_save_to_bank(const selector_t *s, abank_t *b, err_t *err);
/* Reads them back; n_domains from keys.weight. ERR_NOTFOUND when the bank has no selector,
 * ERR_FORMAT (names the tensor) when a tensor is missing or misshapen. */
int selector_load_from_bank(selector_t *s, const abank_t *b, err_t *err);

#endif
