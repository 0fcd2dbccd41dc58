/* pth.h — read PyTorch `torch.save` checkpoints (zip + pickle) without Python, and convert
 * official SAM / MobileSAM state dicts to the native weights file (wts.h).
 *
 * Format read: the zip layout written by torch >= 1.6: "<root>/data.pkl" (pickle, protocol
 * 2..5) plus one entry "<root>/data/<key>" per storage, entries STORED (uncompressed; torch
 * never compresses them). Zip64 records are understood. Rejected with a clear message:
 * deflated entries, the legacy non-zip format (torch < 1.6 or _use_new_zipfile_serialization
 * =False), TorchScript archives, big-endian data, anything malformed.
 *
 * The pickle is run by a minimal VM that knows what state dicts use (dicts, OrderedDict,
 * lists, tuples, str, int, float, bool, None, memo, persistent-id storages and
 * torch._utils._rebuild_tensor_v2 / _rebuild_parameter). Any other callable is an error,
 * never executed. Every length, offset, index, stride and count is bounds-checked; sizes
 * are limited (PTH_MAX_*). A state dict may be the top-level dict or sit under a "model" or
 * "state_dict" key. Storage dtypes: float32, float16, bfloat16, float64 (read as float32),
 * int64, int32 (read as int64). Storage offsets and strides are honoured: reading a tensor
 * always yields a contiguous row-major copy.
 */
#ifndef MODA_PTH_H
#define MODA_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "wts.h"

#define PTH_MAX_TENSORS 20000            /* tensors in one state dict (ViT-H has ~600) */
#define PTH_MAX_PICKLE ((size_t)256 << 20) /* data.pkl size */
#define PTH_MAX_OBJECTS 4000000          /* pickle values created */
#define PTH_MAX_STACK 1000000            /* pickle stack + memo entries */
#define PTH_MAX_NUMEL ((int64_t)1 << 32)  /* elements in one tensor */
#define PTH_MAX_ENTRIES 200000           /* zip entries */

typedef enum { PTH_F32 = 0, PTH_F16, PTH_BF16, PTH_F64, PTH_I64, PTH_I32 } pth_dtype_t;

typedef struct pth_tensor {
    const char *name;   /* state-dict key; valid while the pth_t lives */
    pth_dtype_t dtype;  /* storage dtype as saved */
    int ndim;           /* 0..WTS_MAX_DIMS */
    int64_t shape[WTS_MAX_DIMS];
    int64_t numel;
} pth_tensor_t;

typedef struct pth pth_t;

/* Open a checkpoint file (memory-mapped) and parse its pickle. Caller owns result
 * (pth_destroy). NULL + err (ERR_IO, ERR_FORMAT, ERR_UNSUPPORTED, ERR_RANGE) on failure;
 * the message names the file part or tensor at fault. */
pth_t *pth_open(const char *path, err_t *err);
/* Same from a buffer (copied). Caller owns result. */
pth_t *pth_from_memory(const void *buf, size_t len, err_t *err);
void pth_destroy(pth_t **p);

/* Tensors of the state dict, in pickle (insertion) order. Borrowed. */
int pth_count(const pth_t *p);
const pth_tensor_t *pth_at(const pth_t *p, int i);
/* Index of a tensor by name, or -1. */
int pth_find(const pth_t *p, const char *name);

/* Contiguous row-major copy of tensor i into dst (numel floats); float dtypes only
 * (f16/bf16/f64 converted). ERR_UNSUPPORTED for integer tensors, ERR_RANGE for a bad i. */
int pth_read_f32(const pth_t *p, int i, float *dst, err_t *err);
/* Same for integer tensors (int32 widened) into dst (numel int64). */
int pth_read_i64(const pth_t *p, int i, int64_t *dst, err_t *err);

/* Adds every tensor whose name starts with prefix_filter (NULL or "" = all) to out under
 * its official name: float tensors as F32, integer tensors as I64. Returns the number of
 * tensors added (>= 0) or a negative ERR_*. out is borrowed. */
int pth_load(const char *path, wts_writer_t *out, const char *prefix_filter, err_t *err);
int pth_add_to_writer(const pth_t *p, wts_writer_t *out, const char *prefix_filter,
                      err_t *err);

/* What pth_convert_sam found. */
typedef struct pth_sam_info {
    char encoder[16];   /* "vit_b" | "vit_l" | "vit_h" | "vit_custom" | "tinyvit_5m" */
    int embed_dim;      /* ViT: C; TinyViT: 0 */
    int depth;          /* ViT: number of blocks; TinyViT: 0 */
    int n_tensors;      /* tensors written */
    int n_bn_folded;    /* Conv2d_BN pairs folded */
    int n_dropped;      /* buffers dropped (attention_bias_idxs, num_batches_tracked) */
} pth_sam_info_t;

/* Convert an official SAM (ViT-B/L/H) or MobileSAM (TinyViT) state dict into out:
 * keys keep their official names; "<x>.c.weight" + "<x>.bn.{weight,bias,running_mean,
 * running_var}" pairs are folded (BatchNorm eps 1e-5) into "<x>.c.weight" + "<x>.c.bias"
 * and the "<x>.bn.*" tensors are not written; "*.attention_bias_idxs" and
 * "*.num_batches_tracked" buffers are dropped. Sets metadata moda.kind = "sam-weights",
 * moda.encoder (ViT by embed dim and depth: 768/12 vit_b, 1024/24 vit_l, 1280/32 vit_h,
 * any other ViT shape "vit_custom"; TinyViT by its patch_embed.seq keys: tinyvit_5m) and
 * moda.source = `source` (may be NULL). ERR_FORMAT when no image encoder is recognised or a
 * BN group is incomplete / mis-shaped. info may be NULL. */
int pth_convert_sam(const pth_t *p, wts_writer_t *out, const char *source,
                    pth_sam_info_t *info, err_t *err);

#endif
