/* preprocess.c — SAM preprocessing; the resize follows Pillow's two-pass fixed-point
 * resampler (Resample.c) step by step so the uint8 result is identical to PIL's.
 */
#include "preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static const float MEAN[3] = {123.675f, 116.28f, 103.53f};
static const float STD[3] = {58.395f, 57.12f, 57.375f};

void prep_target_size(int h, int w, int side, int *new_h, int *new_w)
{
    double s = (double)side / (h > w ? h : w);
    *new_h = (int)(h * s + 0.5);
    *new_w = (int)(w * s + 0.5);
}

static double triangle(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Per output index: first input index bounds[2i], count bounds[2i+1], and ksize fixed-point
 * weights at kk[i·ksize]. Box is the whole input [0, in_size). Returns ksize or -1. */
static int coeffs(int in_size, int out_size, int **boundsp, int32_t **kkp)
{
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = calloc((size_t)out_size * ksize, sizeof *pre);
    int32_t *kk = malloc((size_t)out_size * ksize * sizeof *kk);
    int *bounds = malloc((size_t)out_size * 2 * sizeof *bounds);
    if (!pre || !kk || !bounds) {
        free(pre);
        free(kk);
        free(bounds);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = pre + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            double wgt = triangle((x + xmin - center + 0.5) * ss);
            k[x] = wgt;
            ww += wgt;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * ksize; i++)
        kk[i] = pre[i] < 0 ? (int32_t)(-0.5 + pre[i] * (1 << PRECISION_BITS))
                           : (int32_t)(0.5 + pre[i] * (1 << PRECISION_BITS));
    free(pre);
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t v)
{
    if (v >= (1 << PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

int prep_resize_bilinear(const uint8_t *src, int w, int h, int c, uint8_t *dst, int nw, int nh,
                         err_t *err)
{
    if (w < 1 || h < 1 || nw < 1 || nh < 1 || c < 1 || c > 4)
        return err_set(err, ERR_INVALID, "resize: bad sizes %dx%dx%d -> %dx%d", w, h, c, nw, nh);
    if (w == nw && h == nh) { /* PIL returns a copy */
        memcpy(dst, src, (size_t)w * h * c);
        return 0;
    }
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL;
    int ksh = coeffs(w, nw, &bh, &kh), ksv = coeffs(h, nh, &bv, &kv);
    uint8_t *tmp = NULL;
    int rc = 0;
    if (ksh < 0 || ksv < 0) goto nomem;

    const uint8_t *vin = src; /* input of the vertical pass */
    int vin_w = w;
    if (nw != w) {
        /* Horizontal pass over only the rows the vertical pass reads. */
        int yfirst = bv[0], ylast = bv[2 * nh - 2] + bv[2 * nh - 1];
        tmp = malloc((size_t)nw * (ylast - yfirst) * c);
        if (!tmp) goto nomem;
        for (int yy = 0; yy < ylast - yfirst; yy++) {
            const uint8_t *row = src + (size_t)(yy + yfirst) * w * c;
            uint8_t *out = tmp + (size_t)yy * nw * c;
            for (int xx = 0; xx < nw; xx++) {
                int xmin = bh[2 * xx], xmax = bh[2 * xx + 1];
                const int32_t *k = kh + (size_t)xx * ksh;
                for (int ch = 0; ch < c; ch++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < xmax; x++) ss += row[(x + xmin) * c + ch] * k[x];
                    out[xx * c + ch] = clip8(ss);
                }
            }
        }
        for (int i = 0; i < nh; i++) bv[2 * i] -= yfirst;
        vin = tmp;
        vin_w = nw;
    }
    if (nh != h) {
        for (int yy = 0; yy < nh; yy++) {
            int ymin = bv[2 * yy], ymax = bv[2 * yy + 1];
            const int32_t *k = kv + (size_t)yy * ksv;
            uint8_t *out = dst + (size_t)yy * nw * c;
            for (int xx = 0; xx < nw * c; xx++) {
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int y = 0; y < ymax; y++) ss += vin[(size_t)(y + ymin) * vin_w * c + xx] * k[y];
                out[xx] = clip8(ss);
            }
        }
    } else {
        memcpy(dst, vin, (size_t)nw * nh * c);
    }
    goto done;
nomem:
    rc = err_set(err, ERR_NOMEM, "resize: out of memory (%dx%d -> %dx%d)", w, h, nw, nh);
done:
    free(tmp);
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    return rc;
}

int prep_sam_input(const image_t *im, float *x, uint8_t *resized, prep_info_t *info,
                   err_t *err)
{
    if (!im || (im->c != 1 && im->c != 3))
        return err_set(err, ERR_INVALID, "preprocess: need a gray or RGB image");
    prep_info_t pi = {.h = im->h, .w = im->w};
    prep_target_size(im->h, im->w, PREP_SIDE, &pi.new_h, &pi.new_w);
    if (pi.new_h < 1 || pi.new_w < 1)
        return err_set(err, ERR_RANGE,
                       "preprocess: image %dx%d is too elongated (a side would resize to 0)",
                       im->w, im->h);
    err_t e2;
    image_t *rgb = im->c == 3 ? NULL : image_to_rgb(im, &e2);
    if (im->c != 3 && !rgb) return err_set(err, e2.code, "%s", e2.msg);
    const image_t *src = rgb ? rgb : im;
    uint8_t *r = resized ? resized : malloc((size_t)pi.new_w * pi.new_h * 3);
    int rc = r ? prep_resize_bilinear(src->data, src->w, src->h, 3, r, pi.new_w, pi.new_h, err)
               : err_set(err, ERR_NOMEM, "preprocess: out of memory");
    if (rc == 0) {
        const size_t plane = (size_t)PREP_SIDE * PREP_SIDE;
        for (int ch = 0; ch < 3; ch++) {
            float *o = x + ch * plane;
            for (int y = 0; y < PREP_SIDE; y++) {
                float *orow = o + (size_t)y * PREP_SIDE;
                if (y >= pi.new_h) {
                    memset(orow, 0, PREP_SIDE * sizeof *orow);
                    continue;
                }
                const uint8_t *irow = r + (size_t)y * pi.new_w * 3;
                for (int xx = 0; xx < pi.new_w; xx++)
                    orow[xx] = ((float)irow[3 * xx + ch] - MEAN[ch]) / STD[ch];
                for (int xx = pi.new_w; xx < PREP_SIDE; xx++) orow[xx] = 0.0f;
            }
        }
        if (info) *info = pi;
    }
    if (!resized) free(r);
    image_destroy(&rgb);
    return rc;
}

void prep_map_point(const prep_info_t *info, float x, float y, float *ox, float *oy)
{
    *ox = (float)(x * ((double)info->new_w / info->w));
    *oy = (float)(y * ((double)info->new_h / info->h));
}
