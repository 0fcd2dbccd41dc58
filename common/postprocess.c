/* postprocess.c — bilinear upscaling of mask logits (PyTorch align_corners=false), fused and
 * literal; thresholding and the stability score. Both upscale paths share the axis tables
 * and the interpolation expression, so their floats are identical.
 */
#include "postprocess.h"

#include <stdlib.h>
#include <string.h>

#define FRAME 1024

typedef struct axis {
    int *i0, *i1;
    float *l0, *l1;
} axis_t;

/* PyTorch's compute_source_index_and_lambda for align_corners=false: the scale is a float,
 * the source coordinate is evaluated in double (as the C++ expression promotes it) and only
 * lambda is rounded to float; equal sizes copy. (ONNX pytorch_half_pixel maps a 1-pixel
 * output to source 0; PyTorch, followed here, does not.) */
static int axis_new(axis_t *a, int in, int out)
{
    a->i0 = malloc(sizeof(int) * out);
    a->i1 = malloc(sizeof(int) * out);
    a->l0 = malloc(sizeof(float) * out);
    a->l1 = malloc(sizeof(float) * out);
    if (!a->i0 || !a->i1 || !a->l0 || !a->l1) return -1;
    float scale = (float)in / (float)out;
    for (int d = 0; d < out; d++) {
        if (in == out) {
            a->i0[d] = a->i1[d] = d;
            a->l0[d] = 1.0f;
            a->l1[d] = 0.0f;
            continue;
        }
        double src = (double)scale * (d + 0.5) - 0.5;
        if (src < 0) src = 0;
        int i0 = (int)src;
        if (i0 > in - 1) i0 = in - 1;
        double l1 = src - i0;
        if (l1 < 0) l1 = 0;
        if (l1 > 1) l1 = 1;
        a->i0[d] = i0;
        a->i1[d] = i0 < in - 1 ? i0 + 1 : i0;
        a->l1[d] = (float)l1;
        a->l0[d] = 1.0f - (float)l1;
    }
    return 0;
}

static void axis_free(axis_t *a)
{
    free(a->i0);
    free(a->i1);
    free(a->l0);
    free(a->l1);
}

/* One output row: rows r0, r1 of the source (width by ax), weights ly0, ly1. */
static void lerp_row(const float *r0, const float *r1, float ly0, float ly1, const axis_t *ax,
                     int n, float *out)
{
    for (int x = 0; x < n; x++) {
        int a = ax->i0[x], b = ax->i1[x];
        float t0 = r0[a] * ax->l0[x] + r0[b] * ax->l1[x];
        float t1 = r1[a] * ax->l0[x] + r1[b] * ax->l1[x];
        out[x] = t0 * ly0 + t1 * ly1;
    }
}

void post_resize_bilinear(const float *src, int sh, int sw, float *dst, int dh, int dw)
{
    axis_t ay = {0}, ax = {0};
    if (axis_new(&ay, sh, dh) == 0 && axis_new(&ax, sw, dw) == 0)
        for (int y = 0; y < dh; y++)
            lerp_row(src + (size_t)ay.i0[y] * sw, src + (size_t)ay.i1[y] * sw, ay.l0[y], ay.l1[y],
                     &ax, dw, dst + (size_t)y * dw);
    axis_free(&ay);
    axis_free(&ax);
}

static int check_args(int lr, int new_h, int new_w, int h, int w, err_t *err)
{
    if (lr < 1 || new_h < 1 || new_w < 1 || new_h > FRAME || new_w > FRAME || h < 1 || w < 1)
        return err_set(err, ERR_INVALID, "postprocess: bad sizes lr=%d new=%dx%d out=%dx%d", lr,
                       new_w, new_h, w, h);
    return 0;
}

int post_upscale_ref(const float *lowres, int lr, int new_h, int new_w, int h, int w,
                     float *dst, err_t *err)
{
    if (check_args(lr, new_h, new_w, h, w, err)) return ERR_INVALID;
    float *big = malloc(sizeof(float) * FRAME * FRAME);
    float *crop = malloc(sizeof(float) * new_h * new_w);
    if (!big || !crop) {
        free(big);
        free(crop);
        return err_set(err, ERR_NOMEM, "postprocess: out of memory");
    }
    post_resize_bilinear(lowres, lr, lr, big, FRAME, FRAME);
    for (int y = 0; y < new_h; y++) memcpy(crop + (size_t)y * new_w, big + (size_t)y * FRAME, sizeof(float) * new_w);
    post_resize_bilinear(crop, new_h, new_w, dst, h, w);
    free(big);
    free(crop);
    return 0;
}

int post_upscale(const float *lowres, int lr, int new_h, int new_w, int h, int w, float *dst,
                 err_t *err)
{
    if (check_args(lr, new_h, new_w, h, w, err)) return ERR_INVALID;
    /* first stage tables (lr → 1024, only the first new_h / new_w entries are used), second
     * stage tables (new → original). */
    axis_t ay1 = {0}, ax1 = {0}, ay2 = {0}, ax2 = {0};
    float *cache = malloc(sizeof(float) * 2 * new_w);
    int cached[2] = {-1, -1}, rc = 0;
    if (!cache || axis_new(&ay1, lr, FRAME) || axis_new(&ax1, lr, FRAME) ||
        axis_new(&ay2, new_h, h) || axis_new(&ax2, new_w, w)) {
        rc = err_set(err, ERR_NOMEM, "postprocess: out of memory");
        goto done;
    }
    for (int y = 0; y < h; y++) {
        const float *rows[2];
        int want[2] = {ay2.i0[y], ay2.i1[y]};
        for (int k = 0; k < 2; k++) {
            int slot = cached[0] == want[k] ? 0 : cached[1] == want[k] ? 1 : -1;
            if (slot < 0) {
                /* evict the slot that does not hold the other row of this output row */
                slot = cached[0] == want[1 - k] ? 1 : 0;
                int r = want[k];
                lerp_row(lowres + (size_t)ay1.i0[r] * lr, lowres + (size_t)ay1.i1[r] * lr,
                         ay1.l0[r], ay1.l1[r], &ax1, new_w, cache + (size_t)slot * new_w);
                cached[slot] = r;
            }
            rows[k] = cache + (size_t)slot * new_w;
        }
        lerp_row(rows[0], rows[1], ay2.l0[y], ay2.l1[y], &ax2, w, dst + (size_t)y * w);
    }
done:
    free(cache);
    axis_free(&ay1);
    axis_free(&ax1);
    axis_free(&ay2);
    axis_free(&ax2);
    return rc;
}

long long post_threshold(const float *logits, long long n, float thr, uint8_t *mask)
{
    long long fg = 0;
    for (long long i = 0; i < n; i++) {
        int on = logits[i] > thr;
        mask[i] = on ? 255 : 0;
        fg += on;
    }
    return fg;
}

float post_stability(const float *logits, long long n, float thr, float off)
{
    long long inter = 0, uni = 0;
    for (long long i = 0; i < n; i++) {
        inter += logits[i] > thr + off;
        uni += logits[i] > thr - off;
    }
    return uni ? (float)((double)inter / (double)uni) : 0.0f;
}
