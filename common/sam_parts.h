/* sam_parts.h — the parts of the SAM model, each in its own module, glued by sam.c.
 *
 *   sam_tinyvit.c  TinyViT-5M image encoder (MobileSAM)
 *   sam_vit.c      ViT-B/L/H image encoder (official SAM)
 *   sam_decoder.c  prompt encoder + two-way mask decoder + IoU head
 *
 * Every part is built from kn_* ops only. A part borrows the wts_t it was made from: the
 * weights must outlive it. Tensors are float32; images [C,H,W]; exact layer facts in
 * ../shared/design/MODEL.md. Forward functions may be called from one thread at a time
 * per part object (they reuse an internal activation arena).
 */
#ifndef MODA_SAM_PARTS_H
#define MODA_SAM_PARTS_H

#include "err.h"
#include "wts.h"

#define SAM_IMG 1024   /* encoder input side */
#define SAM_EMB_C 256  /* embedding channels */
#define SAM_EMB 64     /* embedding side */
#define SAM_LOWRES 256 /* low-res mask side */
#define SAM_NMASK 4    /* mask tokens: 0 = single-mask token, 1..3 multimask */

/* ---- TinyViT-5M ------------------------------------------------------------------------- */
typedef struct tinyvit tinyvit_t;
/* Validates every tensor it needs (message names the tensor). Caller owns result. */
tinyvit_t *tinyvit_new(const wts_t *w, err_t *err);
void tinyvit_destroy(tinyvit_t **e);
/* x[3,1024,1024] (preprocessed) -> emb[256,64,64]. early (may be NULL) receives the
 * stage-1 output after its merge, [160,64,64] (adapter input, MODA.md). */
int tinyvit_forward(tinyvit_t *e, const float *x, float *emb, float *early, err_t *err);
/* The same, plus the selector taps (MoDA selector, common/selector.h): taps (may be NULL;
 * caller-allocated, TINYVIT_TAPS_FLOATS floats) receives, for each stage-2 block (6, C=160)
 * then each stage-3 block (2, C=320), in order, the keys and values of the block's qkv on
 * the LayerNormed patch tokens: [4096, 2C] per block, row = [k (C) | v (C)], heads
 * contiguous (head h at columns h*32). emb and early are bit-identical to tinyvit_forward. */
#define TINYVIT_TAPS_FLOATS ((size_t)4096 * (6 * 2 * 160 + 2 * 2 * 320))
int tinyvit_forward_taps(tinyvit_t *e, const float *x, float *emb, float *early, float *taps,
                         err_t *err);
/* With MODA_PROFILE=1 in the environment at tinyvit_new, forward passes add up time per op
 * kind; writes "runs=N total_ms=.. gemm_ms=..(share%) ..." (per-run means) into buf[n].
 * Returns 0, or ERR_STATE (text still written, all zero) when profiling is off. */
int tinyvit_profile_text(const tinyvit_t *e, char *buf, size_t n);

/* ---- ViT-B/L/H -------------------------------------------------------------------------- */
typedef struct vit vit_t;
vit_t *vit_new(const wts_t *w, err_t *err);
void vit_destroy(vit_t **v);
/* Channels of the early feature (768 / 1024 / 1280). */
int vit_early_channels(const vit_t *v);
/* x[3,1024,1024] -> emb[256,64,64]; early (may be NULL) receives the output of the first
 * global-attention block as [C,64,64]. */
int vit_forward(vit_t *v, const float *x, float *emb, float *early, err_t *err);

/* ---- prompt encoder + mask decoder ------------------------------------------------------ */
/* One prompt point in the 1024 frame (already scaled by new_w/w, new_h/h; the +0.5 pixel
 * centre shift is applied inside). label: 1 foreground, 0 background, -1 padding,
 * 2 box top-left, 3 box bottom-right — exactly the ONNX export's point_labels. */
typedef struct sam_point {
    float x, y;
    float label;
} sam_point_t;

typedef struct samdec samdec_t;
samdec_t *samdec_new(const wts_t *w, err_t *err);
void samdec_destroy(samdec_t **d);
/* emb[256,64,64]; pts[n] (the caller appends the padding point when there is no box, as
 * the official predictor does); mask_in[256,256] logits or NULL (no mask prompt).
 * Writes lowres[4,256,256] (all 4 mask tokens' logits) and iou[4]. */
int samdec_forward(samdec_t *d, const float *emb, const sam_point_t *pts, int n,
                   const float *mask_in, float *lowres, float iou[SAM_NMASK], err_t *err);
/* The ONNX export's single-mask rule: argmax over i of iou[i] + (npoints − 2.5)·[1000,0,0,0]
 * (first index on ties). npoints counts every prompt point given to samdec_forward,
 * padding and box corners included. Returns 0..3. */
int samdec_pick_single(const float iou[SAM_NMASK], int npoints);

/* The prompt encoder's host math, shared by samdec_forward and the GPU decoder
 * (samdec_cuda.c) so both build the same token-side input. */
typedef struct samdec_prompt_w {
    const float *pe_g;        /* [2,128] pe_layer.positional_encoding_gaussian_matrix */
    const float *pt_emb[4];   /* [256] point_embeddings.0..3 (labels 0, 1, 2, 3) */
    const float *not_a_point; /* [256] the padding point's embedding (label -1) */
    const float *iou_tok;     /* [256] mask_decoder.iou_token */
    const float *mask_toks;   /* [4,256] mask_decoder.mask_tokens */
} samdec_prompt_w_t;
/* Points p into w (borrowed; validated, the message names a bad tensor). 0 or ERR_*. */
int samdec_prompt_w_load(samdec_prompt_w_t *p, const wts_t *w, err_t *err);
/* Checks pts[n]: 0 ≤ n ≤ max, labels -1, 0, 1, 2, 3, finite coordinates. 0, ERR_RANGE or
 * ERR_INVALID (message names the point). */
int samdec_check_points(const sam_point_t *pts, int n, int max, err_t *err);
/* t0[5 + n, 256] = [iou token, 4 mask tokens, one sparse embedding per point]. */
void samdec_prompt_tokens(const samdec_prompt_w_t *p, const sam_point_t *pts, int n, float *t0);
/* The dense positional encoding pe[4096, 256], token-major (row y*64 + x). */
void samdec_dense_pe(const float *pe_g, float *pe);

/* ---- MoDA: the one-way hq token (adapter.h) ---------------------------------------------
 * samdec_forward_ex runs the same decoder with one extra output token appended: it attends
 * to the SAM tokens (self-attention) and to the image (token→image attentions), but no SAM
 * token, no image token and not itself attends to it, so every SAM output is the same as
 * without it. A trace records the hq token's path so samdec_hq_backward can return
 * d loss / d hq_token (the token is also its own positional term at every layer) — the
 * image side and the SAM tokens are constants for it. */
typedef struct samdec_trace samdec_trace_t;
samdec_trace_t *samdec_trace_new(err_t *err); /* caller owns result (~30 MB when used) */
void samdec_trace_destroy(samdec_trace_t **t);

typedef struct samdec_extra {
    const float *hq_token; /* [256] the extra token, or NULL (then hq_out/trace unused) */
    float *hq_out;         /* [256] its state after norm_final_attn */
    float *up;             /* [32,256,256] the upscaled image feature (CHW), or NULL */
    samdec_trace_t *trace; /* record the hq path for samdec_hq_backward, or NULL */
} samdec_extra_t;

/* samdec_forward plus the extras in x (x may be NULL: exactly samdec_forward). */
int samdec_forward_ex(samdec_t *d, const float *emb, const sam_point_t *pts, int n,
                      const float *mask_in, float *lowres, float iou[SAM_NMASK],
                      const samdec_extra_t *x, err_t *err);
/* Gradient of the hq token's output w.r.t. the hq token input, for the forward recorded
 * in t: d_hq_out[256] in, d_hq_token[256] out (overwritten). ERR_STATE when t is empty. */
int samdec_hq_backward(const samdec_t *d, const samdec_trace_t *t, const float *d_hq_out,
                       float *d_hq_token, err_t *err);

#endif
