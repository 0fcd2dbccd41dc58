/* postprocess.h — SAM mask postprocessing: low-res logits → mask at the original size.
 *
 *   lowres[256,256] → bilinear (align_corners=false, PyTorch/ONNX Resize semantics) to
 *   1024×1024 → crop to new_h×new_w → bilinear to h×w → mask = logits > 0.
 *
 * post_upscale does both resizes without materialising the 1024² map (two cached rows of
 * the intermediate) and gives bit-identical floats to post_upscale_ref, which does the two
 * steps literally (tests/image checks both and compares with PyTorch's F.interpolate).
 */
#ifndef MODA_POSTPROCESS_H
#define MODA_POSTPROCESS_H

#include <stdint.h>

#include "err.h"

/* Generic bilinear resize of one float plane src[sh,sw] → dst[dh,dw], align_corners=false,
 * with PyTorch's CPU arithmetic (float scale s/d, source coordinate (d+0.5)·scale − 0.5 in
 * double clamped at 0, float weights): equal to F.interpolate within a few ulp. */
void post_resize_bilinear(const float *src, int sh, int sw, float *dst, int dh, int dw);

/* lowres[lr,lr] (lr = 256) → logits[h,w] at the original size, fused. new_h, new_w ≤ 1024
 * is the resized (unpadded) size of the image inside the 1024 frame. Returns 0 or
 * ERR_INVALID / ERR_NOMEM. dst is caller-allocated, h·w floats. */
int post_upscale(const float *lowres, int lr, int new_h, int new_w, int h, int w, float *dst,
                 err_t *err);
/* The literal two-step version (allocates 1024² floats). Same contract. */
int post_upscale_ref(const float *lowres, int lr, int new_h, int new_w, int h, int w,
                     float *dst, err_t *err);

/* mask[i] = logits[i] > thr ? 255 : 0; returns the number of foreground pixels. */
long long post_threshold(const float *logits, long long n, float thr, uint8_t *mask);

/* area(logits > thr + off) / area(logits > thr − off); 0 when the latter is empty.
 * SAM uses thr = 0, off = 1. */
float post_stability(const float *logits, long long n, float thr, float off);

#endif
