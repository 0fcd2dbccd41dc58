/* json.h — a small strict JSON parser (DOM) and a JSON writer (string builder).
 *
 * Used for safetensors headers, result.json, --json outputs and COCO RLE files.
 *
 * Parser: RFC 8259 strict — no comments, no trailing commas, no NaN/Infinity, no leading
 * zeros, no control characters inside strings, valid UTF-8 only, \u escapes with surrogate
 * pairs (lone surrogates and \u0000 are rejected so every string is a C string), duplicate
 * object keys rejected, nothing but whitespace after the value. Depth and input size are
 * limited. Errors carry the byte offset: "json: byte 17: expected ':' after object key".
 *
 * Writer: appends to a growable buffer; commas and key/value separators are placed
 * automatically; strings are escaped; floats are written with %.9g and doubles with %.17g
 * (both read back bit-exactly); non-finite numbers are written as null.
 */
#ifndef MODA_JSON_H
#define MODA_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define JSON_MAX_DEPTH 128             /* default nesting limit */
#define JSON_MAX_BYTES ((size_t)1 << 30) /* default input size limit (1 GiB) */

typedef enum { JSON_NULL = 0, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type_t;

typedef struct json json_t;
struct json {
    json_type_t type;
    int boolean;       /* JSON_BOOL: 0 or 1 */
    double num;        /* JSON_NUMBER: the value as a double */
    int is_int;        /* JSON_NUMBER: written without fraction/exponent and fits int64 */
    int64_t i;         /* JSON_NUMBER with is_int: the exact value */
    char *str;         /* JSON_STRING: UTF-8, NUL-terminated (no embedded NUL) */
    size_t len;        /* JSON_STRING: byte length; ARRAY/OBJECT: number of items */
    json_t *items;     /* ARRAY/OBJECT: len children, in document order */
    char **keys;       /* OBJECT: len keys, keys[i] names items[i] */
    size_t *sorted;    /* OBJECT: item indices sorted by key (for json_get) */
};

/* Parse `len` bytes (need not be NUL-terminated) with the default limits.
 * Caller owns result (json_free). NULL + err (ERR_FORMAT / ERR_RANGE / ERR_NOMEM). */
json_t *json_parse(const char *text, size_t len, err_t *err);
/* Same with explicit limits: max_depth nested arrays/objects, max_bytes of input. */
json_t *json_parse_ex(const char *text, size_t len, int max_depth, size_t max_bytes, err_t *err);
/* Frees the tree and sets *j to NULL. NULL-safe. */
void json_free(json_t **j);

/* ---- reading helpers (all NULL-safe; returned pointers are borrowed from the tree) ---- */

/* Member of an object by key, or NULL (also when j is not an object). O(log n). */
const json_t *json_get(const json_t *j, const char *key);
/* i-th item of an array or object, or NULL when out of range / not a container. */
const json_t *json_at(const json_t *j, size_t i);
/* Item count of an array or object; 0 otherwise. */
size_t json_len(const json_t *j);
/* The string, or NULL when j is not a string. */
const char *json_str(const json_t *j);
/* Typed getters: 0 on success, ERR_FORMAT (message names `what`) on a type mismatch. */
int json_get_int64(const json_t *j, int64_t *out, const char *what, err_t *err);
int json_get_double(const json_t *j, double *out, const char *what, err_t *err);
/* Name of a type ("object", "array", ...). */
const char *json_type_name(json_type_t t);

/* ---- writer ---------------------------------------------------------------------------- */

#define JSON_W_MAX_DEPTH 64

typedef struct json_writer {
    char *buf;          /* NUL-terminated while not failed */
    size_t len, cap;
    int failed;         /* ERR_NOMEM or ERR_STATE once something went wrong; sticky */
    int depth;
    unsigned char count[JSON_W_MAX_DEPTH]; /* per level: 0 = nothing written yet */
    unsigned char in_obj[JSON_W_MAX_DEPTH];
    int after_key;
} json_writer_t;

/* Usage:
 *     json_writer_t w; json_w_init(&w);
 *     json_w_begin_obj(&w); json_w_key(&w, "iou"); json_w_float(&w, 0.93f); json_w_end_obj(&w);
 *     char *s = json_w_finish(&w, &len, err);   // caller owns s (free)
 * Calls after a failure do nothing; json_w_finish reports it. */
void json_w_init(json_writer_t *w);
void json_w_free(json_writer_t *w); /* releases the buffer (not needed after json_w_finish) */
void json_w_begin_obj(json_writer_t *w);
void json_w_end_obj(json_writer_t *w);
void json_w_begin_arr(json_writer_t *w);
void json_w_end_arr(json_writer_t *w);
void json_w_key(json_writer_t *w, const char *key);
void json_w_string(json_writer_t *w, const char *s);
void json_w_string_n(json_writer_t *w, const char *s, size_t n);
void json_w_int(json_writer_t *w, int64_t v);
void json_w_float(json_writer_t *w, float v);   /* %.9g: float round-trips exactly */
void json_w_double(json_writer_t *w, double v); /* %.17g: double round-trips exactly */
void json_w_bool(json_writer_t *w, int v);
void json_w_null(json_writer_t *w);
/* Writes a parsed value (numbers: is_int as int64, else %.17g). */
void json_w_value(json_writer_t *w, const json_t *j);
/* Returns the document (caller owns result, free) and its length; the writer is reset.
 * NULL + err when a call failed or containers are still open. */
char *json_w_finish(json_writer_t *w, size_t *len, err_t *err);

#endif
