/* test_rle — COCO RLE codec (common/rle.h): round trips on random masks of many shapes and
 * densities, area/bbox/IoU against brute force on the decoded pixels, the counts strings of a
 * few masks worked out by hand from the COCO format, and hostile strings and runs (each must be
 * refused with an error, never crash). The comparison with an independent Python encoder on
 * random and real masks is tests/label/rle_ref.py. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/t_check.h"
#include "rle.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* random mask: blobs of runs with density p (per mille), sometimes all 0 / all 1 */
static void fill(uint8_t *m, uint32_t h, uint32_t w, int kind)
{
    size_t n = (size_t)h * w;
    if (kind == 0) memset(m, 0, n);
    else if (kind == 1) memset(m, 1, n);
    else if (kind == 2)
        for (size_t i = 0; i < n; i++) m[i] = (uint8_t)(rnd() % 1000 < 500);
    else {
        memset(m, 0, n);
        int blobs = 1 + (int)(rnd() % 5);
        for (int b = 0; b < blobs; b++) {
            uint32_t y0 = rnd() % h, x0 = rnd() % w, bh = 1 + rnd() % h, bw = 1 + rnd() % w;
            for (uint32_t y = y0; y < h && y < y0 + bh; y++)
                for (uint32_t x = x0; x < w && x < x0 + bw; x++) m[(size_t)y * w + x] = 1;
        }
    }
}

static void brute(const uint8_t *a, const uint8_t *b, uint32_t h, uint32_t w, uint64_t *area, uint32_t bb[4],
                  double *iou)
{
    uint64_t ar = 0, in = 0, un = 0;
    uint32_t x0 = UINT32_MAX, y0 = UINT32_MAX, x1 = 0, y1 = 0;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            int va = a[(size_t)y * w + x] != 0, vb = b[(size_t)y * w + x] != 0;
            ar += va;
            in += va && vb;
            un += va || vb;
            if (va) {
                if (x < x0) x0 = x;
                if (x > x1) x1 = x;
                if (y < y0) y0 = y;
                if (y > y1) y1 = y;
            }
        }
    *area = ar;
    if (ar) bb[0] = x0, bb[1] = y0, bb[2] = x1 - x0 + 1, bb[3] = y1 - y0 + 1;
    else bb[0] = bb[1] = bb[2] = bb[3] = 0;
    *iou = un ? (double)in / (double)un : 0;
}

static void round_trips(void)
{
    int bad = 0;
    for (int it = 0; it < 600; it++) {
        uint32_t h = 1 + rnd() % (it < 300 ? 9 : 70), w = 1 + rnd() % (it < 300 ? 9 : 70);
        uint8_t *m = malloc((size_t)h * w), *m2 = malloc((size_t)h * w), *d = malloc((size_t)h * w);
        fill(m, h, w, it % 5 == 4 ? 3 : it % 5 < 2 ? 2 + (it & 1) : it % 5 - 2);
        fill(m2, h, w, 3);
        rle_t r, r2, r3;
        err_t err = {0};
        char *s = NULL;
        size_t len = 0;
        int ok = !rle_encode(m, h, w, &r, &err) && !rle_check(&r, &err) && !rle_to_string(&r, &s, &len, &err) &&
                 strlen(s) == len && !rle_from_string(s, len, h, w, &r2, &err) && r2.n == r.n &&
                 !memcmp(r2.cnts, r.cnts, r.n * sizeof *r.cnts) && !rle_decode(&r2, d, 1, &err);
        for (size_t i = 0; ok && i < (size_t)h * w; i++) ok = d[i] == (m[i] != 0);
        uint64_t area;
        uint32_t bb[4], rb[4];
        double iou, riou;
        brute(m, m2, h, w, &area, bb, &iou);
        ok = ok && rle_area(&r) == area && !rle_encode(m2, h, w, &r3, &err) && !rle_iou(&r, &r3, &riou, &err) &&
             riou == iou;
        rle_bbox(&r, rb);
        ok = ok && !memcmp(rb, bb, sizeof bb);
        if (!ok && bad++ < 3) fprintf(stderr, "round trip %d (%ux%u) failed: %s\n", it, h, w, err.msg);
        rle_free(&r);
        rle_free(&r2);
        rle_free(&r3);
        free(s);
        free(m);
        free(m2);
        free(d);
    }
    T(bad == 0);
}

/* Strings derived by hand from the format (column-major runs, 5-bit groups + '0'). */
static void known(void)
{
    /* 2x3 mask, rows: 1 0 1 / 1 1 0 -> column-major 1 1 0 1 1 0 -> runs 0,2,1,2,1
     * values: 0 -> '0'; 2 -> '2'; 1 -> '1'; run 3 is 2 - cnts[1] = 0 -> '0'; run 4: 1 - 1 = 0 -> '0' */
    uint8_t m[6] = {1, 0, 1, 1, 1, 0};
    char *s = NULL;
    err_t err = {0};
    T(!rle_encode_string(m, 2, 3, &s, &err));
    T(s && !strcmp(s, "02100"));
    free(s);
    /* 40x1 all foreground: runs 0,40. 40 = 0b101000: low group 8 (|0x20 more) -> 'X', then 1 -> '1' */
    uint8_t f[40];
    memset(f, 1, sizeof f);
    T(!rle_encode_string(f, 40, 1, &s, &err));
    T(s && !strcmp(s, "0X1"));
    free(s);
    /* negative delta: runs 10,1,1,... run 3 = 1 - 1 ... build 1x20: 0*10 1 0 1*8 -> runs 10,1,1,8:
     * '0'+10=':' , '1', '1', run3 = 8-1 = 7 -> '7' */
    uint8_t g[20] = {0};
    g[10] = 1;
    for (int i = 12; i < 20; i++) g[i] = 1;
    T(!rle_encode_string(g, 1, 20, &s, &err));
    T(s && !strcmp(s, ":117"));
    free(s);
    /* runs 5,9,2,...: run 2 has no delta (i > 2 only) -> 5,9,2 ; 1x16 = 0*5 1*9 0*2 -> "592" */
    uint8_t k[16] = {0};
    for (int i = 5; i < 14; i++) k[i] = 1;
    T(!rle_encode_string(k, 1, 16, &s, &err));
    T(s && !strcmp(s, "592"));
    free(s);
    /* runs 1,20,1,2 -> "1", then 20 = 0b10100 has the sign bit 0x10, so a second group
     * follows: 20|0x20 -> 'd', 0 -> '0'; run 2 -> "1"; run 3 = 2 - 20 = -18: low group 14
     * (sign bit clear, rest -1: more) -> 14|0x20 = 46 -> '^', then 31 with sign -> 'O'. */
    uint8_t q[24] = {0};
    for (int i = 1; i < 21; i++) q[i] = 1;
    q[22] = q[23] = 1;
    T(!rle_encode_string(q, 1, 24, &s, &err));
    T(s && !strcmp(s, "1d01^O"));
    uint8_t *dq = NULL;
    T(s && !rle_decode_string(s, 1, 24, &dq, &err) && dq && !memcmp(dq, q, 24));
    free(dq);
    free(s);
}

static void hostile(void)
{
    const struct {
        const char *s;
        uint32_t h, w;
    } cases[] = {
        {"", 2, 2},           /* empty */
        {"3", 2, 2},          /* covers 3 of 4 */
        {"5", 2, 2},          /* covers 5 of 4 */
        {"04", 2, 2},         /* 0 then 4: fine? no: valid. replaced below */
        {"1 3", 2, 2},        /* space */
        {"1\x7f", 2, 2},      /* bad char */
        {"0X", 40, 1},        /* ends inside a value (more bit set) */
        {"00", 2, 2},         /* a zero run after the first */
        {"0O", 2, 2},         /* negative run (-1) */
        {"XXXXXXXXXXXXXXXX1", 4, 4}, /* value too long */
        {"4", 0, 4},          /* empty size */
        {"4", 70000, 4},      /* too large */
        {"1111", 2, 2},       /* fine: 1,1,1+1,1+1 = 6 > 4 -> refused */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (i == 3) continue;
        rle_t r;
        err_t err = {0};
        int rc = rle_from_string(cases[i].s, strlen(cases[i].s), cases[i].h, cases[i].w, &r, &err);
        if (rc == 0) fprintf(stderr, "hostile case %zu accepted\n", i);
        T(rc != 0 && err.msg[0] && r.cnts == NULL);
    }
    rle_t ok;
    T(!rle_from_string("04", 2, 2, 2, &ok, NULL) && ok.n == 2);
    rle_free(&ok);
    /* runs that do not add up, zero runs, no runs */
    uint32_t c1[] = {1, 1}, c2[] = {1, 0, 3}, c3[] = {0, 4};
    rle_t a = {2, 2, c1, 2}, b = {2, 2, c2, 3}, c = {2, 2, c3, 2}, e = {2, 2, NULL, 0};
    uint8_t d[4];
    char *s = NULL;
    T(rle_check(&a, NULL) == ERR_FORMAT && rle_decode(&a, d, 1, NULL) && rle_to_string(&a, &s, NULL, NULL) && !s);
    T(rle_check(&b, NULL) == ERR_FORMAT);
    T(rle_check(&c, NULL) == 0);
    T(rle_check(&e, NULL) == ERR_FORMAT);
    double iou;
    rle_t c22 = {2, 3, c3, 2};
    T(rle_iou(&c, &c22, &iou, NULL) == ERR_INVALID);
    /* random garbage never crashes and is refused or decodes to exactly h*w pixels */
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        char g[24];
        int n = 1 + (int)(rnd() % 23);
        for (int i = 0; i < n; i++) g[i] = (char)(it & 1 ? 48 + rnd() % 64 : rnd() % 256);
        g[n] = 0;
        rle_t r;
        if (!rle_from_string(g, (size_t)n, 1 + rnd() % 8, 1 + rnd() % 8, &r, NULL)) {
            accepted++;
            T(rle_check(&r, NULL) == 0);
            rle_free(&r);
        }
    }
    printf("random strings accepted as valid masks: %d of 20000\n", accepted);
}

int main(void)
{
    t_watchdog(60);
    round_trips();
    known();
    hostile();
    return t_done("test_rle");
}
