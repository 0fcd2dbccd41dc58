/* wts.h — tensor files in the safetensors layout: the frozen SAM weights and (through the
 * bank module) adapter banks.
 *
 * Layout: u64 little-endian header length L, L bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "<name>": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the raw little-endian tensor bytes (offsets relative to the end of the header).
 * Names follow the official SAM state-dict keys (image_encoder.*, prompt_encoder.*,
 * mask_decoder.*). Conv+BatchNorm pairs are stored folded: "<conv>.c.weight" and
 * "<conv>.c.bias", with no "<conv>.bn.*" tensors.
 *
 * Metadata keys written by `moda convert`: "moda.kind" = "sam-weights",
 * "moda.encoder" = "tinyvit_5m" | "vit_b" | "vit_l" | "vit_h", "moda.source".
 *
 * A file is validated completely at open: header JSON, dtypes, every offset range inside
 * the file, no overlaps, total size. Bad files are rejected with a message naming the
 * tensor. Tensor data is read into one aligned block owned by the wts_t.
 */
#ifndef MODA_WTS_H
#define MODA_WTS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define WTS_MAX_DIMS 8

typedef enum { WTS_F32 = 0, WTS_F16, WTS_BF16, WTS_I64, WTS_I32, WTS_U8, WTS_DTYPE_COUNT } wts_dtype_t;

typedef struct wts_tensor {
    const char *name;   /* valid while the wts_t lives */
    wts_dtype_t dtype;
    int ndim;
    int64_t shape[WTS_MAX_DIMS];
    size_t nbytes;
    const void *data;   /* 64-byte aligned; valid while the wts_t lives */
} wts_tensor_t;

typedef struct wts wts_t;

/* "F32", "F16", ... ("?" when out of range) and the element size in bytes (0 when out of range). */
const char *wts_dtype_name(wts_dtype_t d);
size_t wts_dtype_size(wts_dtype_t d);

/* Open and validate a file. Caller owns result (wts_destroy). NULL + err on failure. */
wts_t *wts_open(const char *path, err_t *err);
/* Parse from memory (copied). Caller owns result. */
wts_t *wts_from_memory(const void *buf, size_t len, err_t *err);
void wts_destroy(wts_t **w);

int wts_count(const wts_t *w);
/* i-th tensor in file order (borrowed). */
const wts_tensor_t *wts_at(const wts_t *w, int i);
/* Tensor by name (borrowed) or NULL. */
const wts_tensor_t *wts_find(const wts_t *w, const char *name);
/* Metadata value (borrowed) or NULL. */
const char *wts_meta(const wts_t *w, const char *key);

/* The F32 data of `name`, checked against the expected shape (ndim dims, varargs int64_t
 * written as plain ints). Returns NULL and fills err naming the tensor when it is missing,
 * not F32, or has another shape. Borrowed, valid while w lives. */
const float *wts_f32(const wts_t *w, const char *name, err_t *err, int ndim, ...);

/* sha256 (hex, 64 chars + NUL) over the header-sorted names, shapes and tensor bytes:
 * identifies a base model independent of metadata. Written into out[65]. */
void wts_content_hash(const wts_t *w, char out[65]);

/* ---- writing -------------------------------------------------------------------------- */

typedef struct wts_writer wts_writer_t;

wts_writer_t *wts_writer_new(void);
void wts_writer_destroy(wts_writer_t **wr);
/* Adds a tensor; data is copied. ERR_EXISTS on a duplicate name. */
int wts_writer_add(wts_writer_t *wr, const char *name, wts_dtype_t dtype, int ndim,
                   const int64_t *shape, const void *data, err_t *err);
int wts_writer_set_meta(wts_writer_t *wr, const char *key, const char *value, err_t *err);
/* Writes atomically (temp file + fsync + rename). */
int wts_writer_save(wts_writer_t *wr, const char *path, err_t *err);
/* Serialises to a malloc'd buffer; caller owns *out (free). */
int wts_writer_to_memory(wts_writer_t *wr, void **out, size_t *len, err_t *err);

#endif
