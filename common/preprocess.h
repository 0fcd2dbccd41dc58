/* preprocess.h — the official SAM predictor's image preprocessing, bit-exact with PIL.
 *
 *   RGB uint8 h×w → resize longest side to 1024 (PIL Image.resize BILINEAR, which
 *   antialiases when shrinking) → normalise per channel (x − mean) / std in float32 →
 *   zero-pad bottom/right to 1024×1024 → [3,1024,1024] float32.
 *
 * prep_resize_bilinear reproduces Pillow 9.4's ImagingResample for 8-bit images exactly
 * (two passes, horizontal first, triangle filter with support max(scale,1), coefficients
 * in fixed point with 22 fractional bits, rounding and clipping after each pass);
 * tests/image compares it byte for byte against /usr/bin/python3's PIL on many sizes.
 * Prompt coordinates map with x·new_w/w, y·new_h/h (computed in double, as numpy does).
 */
#ifndef MODA_PREPROCESS_H
#define MODA_PREPROCESS_H

#include <stdint.h>

#include "err.h"
#include "image.h"

#define PREP_SIDE 1024

typedef struct prep_info {
    int h, w;         /* original size */
    int new_h, new_w; /* resized size, the longest side is PREP_SIDE */
} prep_info_t;

/* new_h = int(h·s + 0.5), new_w = int(w·s + 0.5) with s = side / max(h, w) (double). */
void prep_target_size(int h, int w, int side, int *new_h, int *new_w);

/* PIL-exact bilinear resize of an interleaved uint8 image src[h][w][c] (c 1..4) into
 * dst[nh][nw][c] (caller-allocated). Returns 0, ERR_INVALID on bad sizes, ERR_NOMEM. */
int prep_resize_bilinear(const uint8_t *src, int w, int h, int c, uint8_t *dst, int nw, int nh,
                         err_t *err);

/* Full SAM preprocessing of a gray or RGB image (gray is replicated to RGB, as PIL's
 * convert("RGB") does). x receives [3,1024,1024] float32 (caller-allocated, 3·2^20
 * floats); info (may be NULL) the sizes. resized (may be NULL) receives the resized RGB
 * uint8 new_h×new_w×3 (caller-allocated, 1024·1024·3 bytes suffice). */
int prep_sam_input(const image_t *im, float *x, uint8_t *resized, prep_info_t *info,
                   err_t *err);

/* Map a point from original pixels to the 1024 frame (x·new_w/w, y·new_h/h). */
void prep_map_point(const prep_info_t *info, float x, float y, float *ox, float *oy);

#endif
