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

/* Every encoder weight of a checkpoint, found and shape-checked, with the configuration
 * derived from it (C from patch_embed, depth from the block count, head dim and each block's
 * window side from rel_pos_h's [2S−1, head_dim]). This is the one place the ViT layout is
 * read from the weights: vit_new (CPU) and vit_cuda_new (GPU) both use it. Pointers are
 * borrowed from the wts_t, in PyTorch layouts. */
typedef struct vit_block_w {
    const float *n1w, *n1b, *qkvw, *qkvb, *projw, *projb, *rph, *rpw;
    const float *n2w, *n2b, *l1w, *l1b, *l2w, *l2b;
    int S;    /* window side (64 for global blocks) */
    int nwin; /* windows per side: ceil(64 / S) */
} vit_block_w_t;

typedef struct vit_weights {
    vit_info_t info;
    const float *pw, *pb, *pos; /* patch conv [C,3,16,16], bias [C], pos_embed [1,64,64,C] */
    const float *neck0, *neck1w, *neck1b, *neck2, *neck3w, *neck3b;
    vit_block_w_t *blk; /* [info.depth], owned: vit_weights_free */
} vit_weights_t;

/* Fills *vw from w (image_encoder.* keys). Returns 0, or ERR_NOTFOUND / ERR_FORMAT /
 * ERR_UNSUPPORTED (a rel-pos table that would need interpolation) / ERR_NOMEM with *vw
 * zeroed. */
int vit_weights_get(const wts_t *w, vit_weights_t *vw, err_t *err);
/* Frees vw->blk and zeroes *vw. NULL is a no-op. */
void vit_weights_free(vit_weights_t *vw);

void vit_get_info(const vit_t *v, vit_info_t *info);
/* Patch embedding + absolute position: img[3,1024,1024] -> x[4096, C]. */
int vit_embed(vit_t *v, const float *img, float *x, err_t *err);
/* Block i on x[4096, C], in place. ERR_RANGE for a bad i. */
int vit_block(vit_t *v, int i, float *x, err_t *err);
/* Neck: x[4096, C] -> emb[256, 64, 64]. */
int vit_neck(vit_t *v, const float *x, float *emb, err_t *err);

#endif
