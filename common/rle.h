/* rle.h — binary masks in COCO run-length encoding (the format of pycocotools' maskApi).
 *
 * A mask is h×w bytes, row-major (as everywhere else in moda), nonzero = foreground. COCO
 * RLE runs over the mask in column-major (Fortran) order: counts[0] background pixels, then
 * counts[1] foreground, alternating; counts[0] may be 0, every later count is ≥ 1 and the
 * counts sum to h·w. The compressed "counts" string of COCO files writes each count (from
 * the fourth on, as the difference to the count two places earlier) as a signed little-endian
 * base-32 number, 5 bits per character, bit 0x20 = "more characters follow", bit 0x10 of the
 * last character = sign, each character offset by 48 ('0').
 *
 * Invariants checked on every input (hostile strings, sizes from the network): 1 ≤ h, w;
 * h·w ≤ RLE_MAX_PIXELS; string characters in '0'..'o'; no value longer than 12 characters;
 * no unterminated value; no negative or (after the first) zero run; counts sum exactly to
 * h·w. Violations are ERR_FORMAT / ERR_RANGE with a message naming the problem, never a crash.
 * Pure C, no global state, thread-safe.
 */
#ifndef MODA_RLE_H
#define MODA_RLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define RLE_MAX_PIXELS ((uint64_t)1 << 31) /* h·w limit (counts fit uint32) */
#define RLE_MAX_SIDE 65536u

typedef struct rle {
    uint32_t h, w;
    uint32_t *cnts; /* n run lengths, column-major, starting with background; owned */
    size_t n;
} rle_t;

/* Frees r->cnts and zeroes *r. NULL-safe. */
void rle_free(rle_t *r);

/* Checks h, w and the run invariants above (structure only). 0 or ERR_FORMAT/ERR_RANGE. */
int rle_check(const rle_t *r, err_t *err);

/* Encodes a row-major h×w mask (borrowed; nonzero = foreground) into *out (caller owns
 * out->cnts: rle_free). 0, ERR_RANGE (size), ERR_NOMEM. */
int rle_encode(const uint8_t *mask, uint32_t h, uint32_t w, rle_t *out, err_t *err);

/* Decodes into `mask` (h·w bytes, caller's buffer; written 0 or `fg`). r is checked first. */
int rle_decode(const rle_t *r, uint8_t *mask, uint8_t fg, err_t *err);

/* The compressed counts string. *out is NUL-terminated, caller owns result (free); *len may
 * be NULL. r is checked first. */
int rle_to_string(const rle_t *r, char **out, size_t *len, err_t *err);

/* Parses `len` bytes of a counts string for an h×w mask into *out (caller owns: rle_free).
 * Every invariant is checked; on error *out is left empty. */
int rle_from_string(const char *s, size_t len, uint32_t h, uint32_t w, rle_t *out, err_t *err);

/* One-step helpers: mask -> string (caller owns *out) and string -> mask (caller owns *mask,
 * h·w bytes of 0/1). */
int rle_encode_string(const uint8_t *mask, uint32_t h, uint32_t w, char **out, err_t *err);
int rle_decode_string(const char *s, uint32_t h, uint32_t w, uint8_t **mask, err_t *err);

/* Foreground pixel count (sum of the odd runs). r must be valid (rle_check). */
uint64_t rle_area(const rle_t *r);

/* Tight bounding box of the foreground as COCO's [x, y, width, height]; all zero when the
 * mask is empty. r must be valid. */
void rle_bbox(const rle_t *r, uint32_t bbox[4]);

/* Intersection over union of two masks of the same size, computed on the runs (no decode).
 * Two empty masks have IoU 0 (as pycocotools). ERR_INVALID when the sizes differ. */
int rle_iou(const rle_t *a, const rle_t *b, double *iou, err_t *err);

#endif
