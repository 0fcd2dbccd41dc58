/* rle.c — COCO run-length encoding of binary masks (see rle.h for the format and the checks).
 *
 * Runs are column-major; moda masks are row-major, so encode/decode walk columns. The string
 * codec works on int64 so a hostile string cannot overflow before its value is range-checked.
 */
#include "rle.h"

#include <stdlib.h>
#include <string.h>

#define MAX_CHARS 12 /* 12·5 = 60 bits: far more than any valid count needs */

void rle_free(rle_t *r)
{
    if (!r) return;
    free(r->cnts);
    memset(r, 0, sizeof *r);
}

static int size_check(uint32_t h, uint32_t w, err_t *err)
{
    if (h < 1 || w < 1) return err_set(err, ERR_RANGE, "rle: mask size %ux%u is empty", h, w);
    if (h > RLE_MAX_SIDE || w > RLE_MAX_SIDE || (uint64_t)h * w > RLE_MAX_PIXELS)
        return err_set(err, ERR_RANGE, "rle: mask size %ux%u is too large", h, w);
    return 0;
}

int rle_check(const rle_t *r, err_t *err)
{
    int rc = size_check(r->h, r->w, err);
    if (rc) return rc;
    if (r->n == 0 || !r->cnts) return err_set(err, ERR_FORMAT, "rle: no runs for a %ux%u mask", r->h, r->w);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (i > 0 && r->cnts[i] == 0) return err_set(err, ERR_FORMAT, "rle: run %zu is empty", i);
        sum += r->cnts[i];
        if (sum > (uint64_t)r->h * r->w)
            return err_set(err, ERR_FORMAT, "rle: runs exceed %ux%u pixels at run %zu", r->h, r->w, i);
    }
    if (sum != (uint64_t)r->h * r->w)
        return err_set(err, ERR_FORMAT, "rle: runs cover %llu pixels, mask has %llu", (unsigned long long)sum,
                       (unsigned long long)r->h * r->w);
    return 0;
}

int rle_encode(const uint8_t *mask, uint32_t h, uint32_t w, rle_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    int rc = size_check(h, w, err);
    if (rc) return rc;
    /* count the runs first so the array is allocated once */
    size_t n = 1;
    int cur = 0;
    for (uint32_t x = 0; x < w; x++)
        for (uint32_t y = 0; y < h; y++) {
            int v = mask[(size_t)y * w + x] != 0;
            if (v != cur) n++, cur = v;
        }
    uint32_t *c = malloc(n * sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "rle: out of memory for %zu runs", n);
    size_t k = 0;
    uint32_t run = 0;
    cur = 0;
    for (uint32_t x = 0; x < w; x++)
        for (uint32_t y = 0; y < h; y++) {
            int v = mask[(size_t)y * w + x] != 0;
            if (v != cur) {
                c[k++] = run;
                run = 0;
                cur = v;
            }
            run++;
        }
    c[k++] = run;
    out->h = h;
    out->w = w;
    out->cnts = c;
    out->n = k;
    return 0;
}

int rle_decode(const rle_t *r, uint8_t *mask, uint8_t fg, err_t *err)
{
    int rc = rle_check(r, err);
    if (rc) return rc;
    uint32_t h = r->h, w = r->w, x = 0, y = 0; /* column-major position */
    for (size_t i = 0; i < r->n; i++) {
        uint8_t v = (i & 1) ? fg : 0;
        for (uint32_t j = 0; j < r->cnts[i]; j++) {
            mask[(size_t)y * w + x] = v;
            if (++y == h) y = 0, x++;
        }
    }
    return 0;
}

int rle_to_string(const rle_t *r, char **out, size_t *len, err_t *err)
{
    *out = NULL;
    int rc = rle_check(r, err);
    if (rc) return rc;
    /* every value takes at most 7 characters (|x| < 2^32 needs 33 bits + sign) */
    char *s = malloc(r->n * 7 + 1);
    if (!s) return err_set(err, ERR_NOMEM, "rle: out of memory for %zu runs", r->n);
    size_t p = 0;
    for (size_t i = 0; i < r->n; i++) {
        int64_t x = r->cnts[i];
        if (i > 2) x -= r->cnts[i - 2];
        int more = 1;
        while (more) {
            int c = (int)(x & 0x1f);
            x >>= 5; /* arithmetic shift: x stays negative until -1 */
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            s[p++] = (char)(c + 48);
        }
    }
    s[p] = 0;
    *out = s;
    if (len) *len = p;
    return 0;
}

int rle_from_string(const char *s, size_t len, uint32_t h, uint32_t w, rle_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    int rc = size_check(h, w, err);
    if (rc) return rc;
    if (len == 0) return err_set(err, ERR_FORMAT, "rle: empty counts string");
    /* a value takes at least one character: len bounds the run count */
    size_t cap = len < (size_t)h * w + 1 ? len : (size_t)h * w + 1;
    uint32_t *c = malloc(cap * sizeof *c);
    if (!c) return err_set(err, ERR_NOMEM, "rle: out of memory for %zu runs", cap);
    size_t m = 0, p = 0;
    uint64_t total = (uint64_t)h * w, sum = 0;
    while (p < len) {
        int64_t x = 0;
        int k = 0, more = 1, ch = 0;
        while (more) {
            if (p >= len) {
                rc = err_set(err, ERR_FORMAT, "rle: counts string ends inside a value (byte %zu)", p);
                goto fail;
            }
            ch = (unsigned char)s[p] - 48;
            if (ch < 0 || ch > 63) {
                rc = err_set(err, ERR_FORMAT, "rle: bad character 0x%02x at byte %zu of the counts string",
                             (unsigned char)s[p], p);
                goto fail;
            }
            if (k >= MAX_CHARS) {
                rc = err_set(err, ERR_FORMAT, "rle: value too long at byte %zu", p);
                goto fail;
            }
            x |= (int64_t)((uint64_t)(ch & 0x1f) << (5 * k));
            more = ch & 0x20;
            p++;
            k++;
        }
        if (ch & 0x10) x = (int64_t)((uint64_t)x | (~(uint64_t)0 << (5 * k))); /* sign extend */
        if (m > 2) x += c[m - 2];
        if (x < 0 || (m > 0 && x == 0) || (uint64_t)x > total - sum) {
            rc = err_set(err, ERR_FORMAT, "rle: run %zu has length %lld (%llu pixels left of %ux%u)", m,
                         (long long)x, (unsigned long long)(total - sum), h, w);
            goto fail;
        }
        if (m >= cap) {
            rc = err_set(err, ERR_FORMAT, "rle: too many runs for a %ux%u mask", h, w);
            goto fail;
        }
        c[m++] = (uint32_t)x;
        sum += (uint64_t)x;
    }
    if (sum != total) {
        rc = err_set(err, ERR_FORMAT, "rle: runs cover %llu pixels, mask %ux%u has %llu", (unsigned long long)sum,
                     h, w, (unsigned long long)total);
        goto fail;
    }
    out->h = h;
    out->w = w;
    out->cnts = c;
    out->n = m;
    return 0;
fail:
    free(c);
    return rc;
}

int rle_encode_string(const uint8_t *mask, uint32_t h, uint32_t w, char **out, err_t *err)
{
    rle_t r;
    *out = NULL;
    int rc = rle_encode(mask, h, w, &r, err);
    if (!rc) rc = rle_to_string(&r, out, NULL, err);
    rle_free(&r);
    return rc;
}

int rle_decode_string(const char *s, uint32_t h, uint32_t w, uint8_t **mask, err_t *err)
{
    rle_t r;
    *mask = NULL;
    int rc = rle_from_string(s, strlen(s), h, w, &r, err);
    if (rc) return rc;
    uint8_t *m = malloc((size_t)h * w);
    if (!m) rc = err_set(err, ERR_NOMEM, "rle: out of memory for a %ux%u mask", h, w);
    if (!rc) rc = rle_decode(&r, m, 1, err);
    rle_free(&r);
    if (rc) free(m);
    else *mask = m;
    return rc;
}

uint64_t rle_area(const rle_t *r)
{
    uint64_t a = 0;
    for (size_t i = 1; i < r->n; i += 2) a += r->cnts[i];
    return a;
}

void rle_bbox(const rle_t *r, uint32_t bbox[4])
{
    uint64_t pos = 0, h = r->h;
    uint64_t xmin = UINT64_MAX, xmax = 0, ymin = UINT64_MAX, ymax = 0;
    for (size_t i = 0; i < r->n; i++) {
        uint64_t start = pos, end = pos + r->cnts[i]; /* [start, end) */
        pos = end;
        if (!(i & 1) || end == start) continue;
        uint64_t x0 = start / h, x1 = (end - 1) / h, y0 = start % h, y1 = (end - 1) % h;
        if (x0 < xmin) xmin = x0;
        if (x1 > xmax) xmax = x1;
        if (x0 != x1) y0 = 0, y1 = h - 1; /* the run wraps through a whole column end */
        if (y0 < ymin) ymin = y0;
        if (y1 > ymax) ymax = y1;
    }
    if (xmin == UINT64_MAX) {
        bbox[0] = bbox[1] = bbox[2] = bbox[3] = 0;
        return;
    }
    bbox[0] = (uint32_t)xmin;
    bbox[1] = (uint32_t)ymin;
    bbox[2] = (uint32_t)(xmax - xmin + 1);
    bbox[3] = (uint32_t)(ymax - ymin + 1);
}

int rle_iou(const rle_t *a, const rle_t *b, double *iou, err_t *err)
{
    *iou = 0;
    if (a->h != b->h || a->w != b->w)
        return err_set(err, ERR_INVALID, "rle: iou of a %ux%u and a %ux%u mask", a->h, a->w, b->h, b->w);
    /* walk both run lists together; each step advances to the nearer run end */
    uint64_t inter = 0;
    size_t ia = 0, ib = 0;
    uint64_t ra = a->n ? a->cnts[0] : 0, rb = b->n ? b->cnts[0] : 0;
    while (ia < a->n && ib < b->n) {
        uint64_t step = ra < rb ? ra : rb;
        if ((ia & 1) && (ib & 1)) inter += step;
        ra -= step;
        rb -= step;
        while (ra == 0 && ++ia < a->n) ra = a->cnts[ia];
        while (rb == 0 && ++ib < b->n) rb = b->cnts[ib];
    }
    uint64_t uni = rle_area(a) + rle_area(b) - inter;
    *iou = uni ? (double)inter / (double)uni : 0.0;
    return 0;
}
