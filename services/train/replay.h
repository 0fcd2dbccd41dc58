/* replay.h — replay blobs (adapter_bank.h abank_replay_t) from labelled samples in memory.
 *
 * The bank keeps, per domain, a few labelled samples as the ORIGINAL image file bytes and a
 * 0/255 mask PNG (docs/bank-format.md), for selector retraining. Samples from the label store
 * arrive as stored bytes (JPEG/PNG are kept as they are; raw GRAY8/RGB8 frames are encoded
 * as PNG here) and an h·w 0/1 mask (encoded as a gray 0/255 PNG here). learn.h's
 * learn_replay_from_dataset does the same for a dataset folder.
 */
#ifndef MODA_TRAIN_REPLAY_H
#define MODA_TRAIN_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "adapter_bank.h"
#include "err.h"
#include "image.h"

/* In-memory PNG of an 8-bit gray (c 1) or RGB (c 3) image. *out caller owns (free). */
int replay_png_encode(const image_t *im, uint8_t **out, size_t *len, err_t *err);

/* One replay entry: img_bytes (borrowed, format a Moda__PixelFormat) is copied when it is
 * JPEG/PNG, else `img` (the decoded image, borrowed) is encoded; mask (h·w, nonzero = fg,
 * borrowed) becomes a 0/255 PNG. r's blobs are caller-owned (learn_replay_free frees an array). */
int replay_make(const uint8_t *img_bytes, size_t n, int format, const image_t *img,
                const uint8_t *mask, abank_replay_t *r, err_t *err);

#endif
