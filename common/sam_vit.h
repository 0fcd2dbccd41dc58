/* sam_vit.h — stage-level API of the ViT-B/L/H encoder (sam_vit.c), beyond the
 * vit_new / vit_forward in sam_parts.h: lets tests check each stage against PyTorch
 * goldens and lets MoDA code tap the token stream between blocks.
 *
 * Token layout: x[4096, C] token-major, token t = row*64 + col of the 64×64 grid.
 * All functions use the vit_t's internal arena (one caller at a time per vit_t).
 */
#ifndef MODA_SAM_VIT_H
#define MODA_SAM_VIT_H

#include "sam_parts.h"

#define VIT_TOKENS (SAM_EMB * SAM_EMB)

typedef struct vit_info {
    int embed_dim;    /* C */
    int depth;        /* blocks */
    int heads;        /* C / head_dim */
    int head_dim;     /* from rel_pos_h: 64 for B/L, 80 for H */
    int mlp_dim;      /* lin1 outputs (4C) */
    int first_global; /* index of the first global-attention block (the `early` tap);
                       * the last block when no block is global */
    unsigned long long global_mask; /* bit i: block i is global (window = 64) */
} vit_info_t;

void vit_get_info(const vit_t *v, vit_info_t *info);
/* Patch embedding + absolute position: img[3,1024,1024] -> x[4096, C]. */
int vit_embed(vit_t *v, const float *img, float *x, err_t *err);
/* Block i on x[4096, C], in place. ERR_RANGE for a bad i. */
int vit_block(vit_t *v, int i, float *x, err_t *err);
/* Neck: x[4096, C] -> emb[256, 64, 64]. */
int vit_neck(vit_t *v, const float *x, float *emb, err_t *err);

#endif
