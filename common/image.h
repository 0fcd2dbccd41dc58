/* image.h — 8-bit images in memory, PNG/JPEG decoding (libpng, libjpeg-turbo) and PNG
 * writing for masks and overlays.
 *
 * An image is row-major, interleaved HWC uint8 with c = 1 (gray) or c = 3 (RGB), rows
 * tightly packed (stride = w·c). Decoding matches PIL's `Image.open(f).convert("RGB")` pixel
 * for pixel for 8-bit files (tests/image checks it): palette PNGs expand through the
 * palette, 1/2/4-bit gray is scaled to 0..255, alpha (RGBA, gray+alpha, tRNS) is dropped
 * without compositing, JPEG uses libjpeg's default (islow DCT, fancy upsampling).
 * Differences from PIL, by decision: 16-bit PNG channels are reduced to their high byte
 * (PIL clips instead); CMYK/YCCK JPEG is rejected (ERR_UNSUPPORTED); a truncated JPEG is an
 * error (ERR_FORMAT), never a gray-filled image. EXIF orientation is ignored, like PIL's
 * Image.open. A 1×1 image is valid.
 *
 * Size limit: w·h ≤ IMAGE_MAX_PIXELS and each side ≤ IMAGE_MAX_SIDE, checked from the file
 * header before any pixel buffer is allocated (ERR_RANGE); files above IMAGE_MAX_FILE bytes
 * are refused before reading.
 */
#ifndef MODA_IMAGE_H
#define MODA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define IMAGE_MAX_PIXELS (64LL * 1024 * 1024) /* 67,108,864 pixels, e.g. 8192×8192 */
#define IMAGE_MAX_SIDE 32768
#define IMAGE_MAX_FILE (512LL * 1024 * 1024)

typedef struct image {
    int w, h;      /* ≥ 1 */
    int c;         /* 1 gray, 3 RGB */
    uint8_t *data; /* h·w·c bytes, owned by the image */
} image_t;

/* Allocates a zeroed w×h×c image (c 1 or 3; limits above). Caller owns result. NULL + err
 * (ERR_RANGE, ERR_INVALID or ERR_NOMEM). */
image_t *image_new(int w, int h, int c, err_t *err);
/* Frees the image and sets *im to NULL. NULL-safe. */
void image_destroy(image_t **im);

/* Decodes PNG or JPEG bytes (kind detected from the signature, not the name); `what` names
 * the source in messages (e.g. the path; may be NULL). Returns gray (c = 1) or RGB (c = 3)
 * as stored. Caller owns result. NULL + err: ERR_FORMAT (not PNG/JPEG, corrupt, truncated),
 * ERR_RANGE (too large), ERR_UNSUPPORTED (e.g. CMYK JPEG), ERR_NOMEM. */
image_t *image_decode(const void *buf, size_t len, const char *what, err_t *err);
/* Reads and decodes a file (ERR_IO / ERR_NOTFOUND when it cannot be read, else as above). */
image_t *image_load(const char *path, err_t *err);
/* A new RGB copy (gray is replicated into the three channels). Caller owns result. */
image_t *image_to_rgb(const image_t *im, err_t *err);

/* Writes an 8-bit gray or RGB PNG. Returns 0, ERR_IO or ERR_FORMAT (libpng failure). */
int image_save_png(const image_t *im, const char *path, err_t *err);

/* Writes the mask over an RGB copy of `im`: out = (1-a)·pixel + a·color where mask != 0,
 * plus a one-pixel outline in `color` along the mask border. mask: h×w bytes (borrowed).
 * Caller owns result. */
image_t *image_overlay(const image_t *im, const uint8_t *mask, const uint8_t color[3], float a,
                       err_t *err);

#endif
