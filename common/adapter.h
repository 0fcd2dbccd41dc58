/* adapter.h — the MoDA adapter: an HQ-SAM-style head on the frozen SAM mask decoder.
 *
 *   adapter_t *a = adapter_new(160, &err);             // TinyViT early feature: 160 channels
 *   adapter_init_from_sam(a, sam_weights(sam), seed, &err);   // zero-shot start
 *   adp_work_t *w = adp_work_new(160, &err);
 *   adapter_forward(a, dec, w, emb, early, pts, n, mask_in, logits, sam_lowres, iou, 0, &err);
 *   adapter_backward(a, dec, w, dlogits, grad, &err);  // grad += d loss / d params
 *
 * Parameters (names as stored in a bank under "domain.<name>."; shapes row-major):
 *   hq_token                      [1,256]   extra output token through the frozen transformer
 *   hq_mlp.layers.{0,1,2}.weight  [256,256] [256,256] [32,256]  (ReLU between) -> hyper[32]
 *   hq_mlp.layers.{0,1,2}.bias    [256] [256] [32]
 *   mask_feature.0.weight/bias    [64,32,3,3] [64]   conv3×3 pad 1 on up[32,256,256]
 *   mask_feature.1.weight/bias    [64] [64]          LayerNorm2d (eps 1e-6), then GELU
 *   mask_feature.3.weight/bias    [32,64,3,3] [32]   conv3×3 pad 1
 *   embedding_encoder.0.*         [256,64,2,2] [64]  convT2×2 on emb[256,64,64]
 *   embedding_encoder.1.*         [64] [64]          LayerNorm2d, GELU
 *   embedding_encoder.3.*         [64,32,2,2] [32]   convT2×2 -> [32,256,256]
 *   compress.0.*                  [Ce,256,2,2] [256] convT2×2 on early[Ce,64,64]
 *   compress.1.*                  [256] [256]        LayerNorm2d, GELU
 *   compress.3.*                  [256,32,2,2] [32]  convT2×2 -> [32,256,256]
 * fused = up + mask_feature(up) + embedding_encoder(emb) + compress(early) [32,256,256];
 * logits[256,256] = hyper · fused (the same 256×256 low-res frame as SAM's masks).
 *
 * The hq token is ONE-WAY inside the frozen two-way transformer (samdec_forward_ex): it
 * attends to the SAM tokens and to the image, but no SAM token, no image token and not
 * itself attends to it. So SAM's own outputs are untouched, and a fresh adapter (hq_token =
 * mask token 0, hq_mlp = hypernetwork MLP 0, last layer of each fusion branch zero) gives
 * exactly SAM's mask-0 logits. Gradients flow only along the hq token's path.
 *
 * Invariants: a adapter_t's parameters live in one contiguous float block (data, size) in
 * the fixed order of the table above, so optimiser state and gradients are flat arrays of
 * the same size. Library code: no printing; errors through err_t.
 */
#ifndef MODA_ADAPTER_H
#define MODA_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "sam_parts.h"
#include "wts.h"

#define ADP_HYP 32
#define ADP_NPARAM 25
#define ADP_LN_EPS 1e-6f

/* Index of each parameter in adapter_t.params (the order of the table above). */
enum adp_param_id {
    ADP_P_TOK = 0,
    ADP_P_M0W, ADP_P_M0B, ADP_P_M1W, ADP_P_M1B, ADP_P_M2W, ADP_P_M2B, /* hq_mlp */
    ADP_P_F0W, ADP_P_F0B, ADP_P_F1W, ADP_P_F1B, ADP_P_F3W, ADP_P_F3B, /* mask_feature */
    ADP_P_E0W, ADP_P_E0B, ADP_P_E1W, ADP_P_E1B, ADP_P_E3W, ADP_P_E3B, /* embedding_encoder */
    ADP_P_C0W, ADP_P_C0B, ADP_P_C1W, ADP_P_C1B, ADP_P_C3W, ADP_P_C3B, /* compress */
};

typedef struct adp_param {
    char name[48];
    int ndim;
    int64_t shape[4];
    size_t off, n; /* offset and count in floats inside data */
} adp_param_t;

typedef struct adapter {
    int early_c;
    adp_param_t params[ADP_NPARAM];
    size_t size; /* floats */
    float *data; /* owned, 64-byte aligned */
} adapter_t;

/* A zero-filled adapter for an early feature of early_c channels (1..4096). Caller owns
 * result. */
adapter_t *adapter_new(int early_c, err_t *err);
void adapter_destroy(adapter_t **a);
/* A copy (caller owns result). */
adapter_t *adapter_clone(const adapter_t *a, err_t *err);
/* Parameter by name (e.g. "hq_mlp.layers.0.weight") or NULL. Pointer into a->data. */
float *adapter_param(const adapter_t *a, const char *name);

/* The zero-shot start: hq_token = mask_decoder.mask_tokens[0], hq_mlp = mask_decoder.
 * output_hypernetworks_mlps.0, the last conv of each fusion branch zero (weights and bias),
 * the LayerNorms 1/0, the first convs random (PyTorch's default uniform ±1/sqrt(fan_in),
 * from kn_rng seeded with seed). sam_w is the frozen base model (borrowed).
 * ERR_FORMAT naming a missing tensor. */
int adapter_init_from_sam(adapter_t *a, const wts_t *sam_w, uint64_t seed, err_t *err);

/* ---- forward / backward ------------------------------------------------------------------ */

/* Activations of one sample (about 300 MB: the 256×256 fusion maps and conv scratch). */
typedef struct adp_work adp_work_t;
adp_work_t *adp_work_new(int early_c, err_t *err);
void adp_work_destroy(adp_work_t **w);

/* Runs the frozen decoder with the hq token and the adapter head for one sample.
 * emb[256,64,64], early[Ce,64,64], pts/n/mask_in as samdec_forward. Writes logits[256,256]
 * (the adapter's mask) and, when not NULL, sam_lowres[4,256,256] and iou[4] (SAM's own
 * outputs, unchanged by the adapter). train != 0 records what adapter_backward needs.
 * dec is used (arenas) but not changed. */
int adapter_forward(const adapter_t *a, samdec_t *dec, adp_work_t *w, const float *emb,
                    const float *early, const sam_point_t *pts, int n, const float *mask_in,
                    float *logits, float *sam_lowres, float iou[SAM_NMASK], int train,
                    err_t *err);
/* Backward of the last adapter_forward(train=1) on w: dlogits[256,256] in, grad (a->size
 * floats) ACCUMULATED (+=). ERR_STATE when w holds no training forward. */
int adapter_backward(const adapter_t *a, const samdec_t *dec, adp_work_t *w,
                     const float *dlogits, float *grad, err_t *err);

/* The head alone (used by the tests and the benchmark): hq_out[256] is the hq token's
 * transformer output, up[32,256,256] SAM's upscaled feature (borrowed, must stay valid
 * until the backward). Records activations in w. */
void adapter_head_fwd(const adapter_t *a, adp_work_t *w, const float *hq_out, const float *up,
                      const float *emb, const float *early, float *logits);
/* dlogits -> grad (accumulated, all head parameters: hq_mlp and the three branches) and
 * d_hq_out[256] (overwritten). */
void adapter_head_bwd(const adapter_t *a, adp_work_t *w, const float *dlogits, float *grad,
                      float *d_hq_out);

#endif
