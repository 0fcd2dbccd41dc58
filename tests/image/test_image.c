/* test_image.c — unit tests for image.c, preprocess.c and postprocess.c that need no
 * reference runtime: malformed files give the right error code (never a crash), PNG
 * round trips, size limits checked before allocation, fused upscale == two-step upscale,
 * stability score and point mapping on hand-computed values, byte-mutation robustness, and
 * the decoder prompt list built by sam_prompt_points (order, padding, validation).
 *
 *   test_image DATA_DIR WORK_DIR     (DATA_DIR = shared/data, for one real JPEG)
 * Exits 1 when any check fails.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image.h"
#include "postprocess.h"
#include "preprocess.h"
#include "sam.h"
#include "expect.h"

static uint32_t crc32_of(const uint8_t *b, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= b[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

/* A PNG signature + IHDR chunk with a valid CRC and nothing else. */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    put32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32(b + 16, w);
    put32(b + 20, h);
    b[24] = 8;
    b[25] = 2;
    b[26] = b[27] = b[28] = 0;
    put32(b + 29, crc32_of(b + 12, 17));
    return 33;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

static void test_malformed(const char *data, const char *work)
{
    err_t e = {0};
    char path[4096];
    /* empty file */
    snprintf(path, sizeof path, "%s/empty.png", work);
    FILE *f = fopen(path, "wb");
    fclose(f);
    EXPECTF(!image_load(path, &e) && e.code == ERR_FORMAT, "empty file: %s", e.msg);
    EXPECTF(strstr(e.msg, "empty"), "empty file message: %s", e.msg);
    /* missing file */
    snprintf(path, sizeof path, "%s/does-not-exist.png", work);
    EXPECTF(!image_load(path, &e) && e.code == ERR_NOTFOUND, "missing file: %s", e.msg);
    /* a directory */
    EXPECTF(!image_load(work, &e) && e.code == ERR_IO && strstr(e.msg, "directory"),
            "directory: %s", e.msg);
    /* garbage */
    uint8_t junk[300];
    for (int i = 0; i < 300; i++) junk[i] = (uint8_t)(i * 37 + 11);
    EXPECTF(!image_decode(junk, sizeof junk, "junk", &e) && e.code == ERR_FORMAT, "garbage: %s",
            e.msg);
    /* huge declared size: rejected by the pixel limit, before any allocation */
    uint8_t hdr[64];
    size_t n = png_header(hdr, 20000, 20000);
    EXPECTF(!image_decode(hdr, n, "huge", &e) && e.code == ERR_RANGE, "20000x20000: %d %s", e.code,
            e.msg);
    n = png_header(hdr, 40000, 10);
    EXPECTF(!image_decode(hdr, n, "wide", &e) && e.code != 0, "40000x10: %s", e.msg);
    n = png_header(hdr, 0, 10);
    EXPECTF(!image_decode(hdr, n, "zero", &e) && e.code == ERR_FORMAT, "0x10: %s", e.msg);
    /* header only (no IDAT) */
    n = png_header(hdr, 10, 10);
    EXPECTF(!image_decode(hdr, n, "hdr-only", &e) && e.code == ERR_FORMAT, "header only: %s",
            e.msg);
    EXPECTF(!image_new(20000, 20000, 3, &e) && e.code == ERR_RANGE, "image_new limit");
    EXPECTF(!image_new(10, 10, 2, &e) && e.code == ERR_INVALID, "image_new channels");

    /* truncated JPEG: a real file cut at several points */
    char jpg[4096] = "";
    snprintf(path, sizeof path, "%s/cl/magtile/images", data);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strstr(de->d_name, ".jpg")) {
            snprintf(jpg, sizeof jpg, "%s/%s", path, de->d_name);
            break;
        }
    if (d) closedir(d);
    EXPECTF(jpg[0], "no JPEG found under %s", path);
    size_t len = 0;
    uint8_t *b = jpg[0] ? slurp(jpg, &len) : NULL;
    if (b) {
        image_t *im = image_decode(b, len, "full", &e);
        EXPECTF(im, "real JPEG decodes: %s", e.msg);
        image_destroy(&im);
        size_t cuts[] = {3, 20, 200, len / 2, len - 10};
        for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
            err_clear(&e);
            im = image_decode(b, cuts[i], "cut", &e);
            EXPECTF(!im && e.code == ERR_FORMAT, "JPEG cut at %zu of %zu: %s", cuts[i], len, e.msg);
            image_destroy(&im);
        }
        /* every truncation point (strided): always an error, never a partial image */
        for (size_t cut = 0; cut < len - 2; cut += 1 + len / 97) {
            im = image_decode(b, cut, "sweep", &e);
            EXPECTF(!im, "JPEG cut at %zu decoded", cut);
            image_destroy(&im);
        }
        /* byte mutations: any outcome but a crash; a success must have sane dimensions */
        uint8_t *m = malloc(len);
        unsigned seed = 12345;
        for (int it = 0; it < 150; it++) {
            memcpy(m, b, len);
            for (int k = 0; k < 4; k++) {
                seed = seed * 1103515245u + 12345u;
                m[(seed >> 8) % len] ^= (uint8_t)(1u << ((seed >> 4) & 7));
            }
            im = image_decode(m, len, "mutated", &e);
            EXPECTF(!im || (im->w >= 1 && im->h >= 1), "mutated JPEG");
            image_destroy(&im);
        }
        free(m);
        free(b);
    }
}

static void test_png_roundtrip(const char *work)
{
    err_t e = {0};
    char path[4096];
    for (int c = 1; c <= 3; c += 2) {
        int sizes[][2] = {{1, 1}, {1, 9}, {17, 3}, {64, 48}};
        for (int s = 0; s < 4; s++) {
            image_t *im = image_new(sizes[s][0], sizes[s][1], c, &e);
            for (int i = 0; i < im->w * im->h * c; i++) im->data[i] = (uint8_t)(i * 7 + 3);
            snprintf(path, sizeof path, "%s/rt_%d_%d.png", work, c, s);
            EXPECTF(image_save_png(im, path, &e) == 0, "save: %s", e.msg);
            image_t *back = image_load(path, &e);
            EXPECTF(back && back->w == im->w && back->h == im->h && back->c == c &&
                        !memcmp(back->data, im->data, (size_t)im->w * im->h * c),
                    "PNG round trip c=%d %dx%d", c, im->w, im->h);
            if (back && s == 2) {
                /* truncated PNG */
                size_t len;
                uint8_t *b = slurp(path, &len);
                image_t *t = image_decode(b, len - 20, "cut png", &e);
                EXPECTF(!t && e.code == ERR_FORMAT, "truncated PNG: %s", e.msg);
                image_destroy(&t);
                for (size_t cut = 0; cut < len - 12; cut++) { /* before IEND: all must fail */
                    t = image_decode(b, cut, "sweep png", &e);
                    EXPECTF(!t, "PNG cut at %zu of %zu decoded", cut, len);
                    image_destroy(&t);
                }
                free(b);
            }
            image_destroy(&im);
            image_destroy(&back);
        }
    }
    snprintf(path, sizeof path, "%s/no-such-dir/x.png", work);
    image_t *im = image_new(2, 2, 1, &e);
    EXPECTF(image_save_png(im, path, &e) == ERR_IO, "save into a missing folder: %s", e.msg);
    /* 1x1 image goes through the whole preprocessing: upscaled to 1024x1024 */
    float *x = malloc(sizeof(float) * 3 * 1024 * 1024);
    prep_info_t pi;
    im->w = im->h = 1;
    im->data[0] = 200;
    EXPECTF(prep_sam_input(im, x, NULL, &pi, &e) == 0 && pi.new_h == 1024 && pi.new_w == 1024,
            "1x1 preprocess: %s", e.msg);
    EXPECTF(x[0] == (200.0f - 123.675f) / 58.395f &&
                x[1024 * 1024 * 3 - 1] == (200.0f - 103.53f) / 57.375f,
            "1x1 preprocess values");
    /* an extremely thin image cannot keep a 1-pixel side: clear error */
    image_t *thin = image_new(32000, 1, 1, &e);
    EXPECTF(thin && prep_sam_input(thin, x, NULL, &pi, &e) == ERR_RANGE, "32000x1: %s", e.msg);
    image_destroy(&thin);
    free(x);
    /* overlay: mask pixels change, others do not */
    image_t *rgb = image_new(4, 4, 3, &e);
    uint8_t mask[16] = {0};
    mask[5] = mask[6] = mask[9] = mask[10] = 255;
    const uint8_t red[3] = {255, 0, 0};
    image_t *ov = image_overlay(rgb, mask, red, 0.5f, &e);
    EXPECTF(ov && ov->data[0] == 0 && ov->data[3 * 5] == 255, "overlay");
    image_destroy(&ov);
    image_destroy(&rgb);
    image_destroy(&im);
}

static void test_post(void)
{
    err_t e = {0};
    int sizes[][2] = {{460, 1130}, {1, 1}, {1024, 1024}, {7, 2000}, {399, 114}, {1500, 1499}};
    float *lr = malloc(sizeof(float) * 256 * 256);
    unsigned seed = 99;
    for (int i = 0; i < 256 * 256; i++) {
        seed = seed * 1664525u + 1013904223u;
        lr[i] = (float)((int)(seed >> 9) % 2000 - 1000) / 100.0f;
    }
    for (int s = 0; s < 6; s++) {
        int h = sizes[s][0], w = sizes[s][1], nh, nw;
        prep_target_size(h, w, 1024, &nh, &nw);
        if (nh < 1) nh = 1;
        if (nw < 1) nw = 1;
        float *a = malloc(sizeof(float) * h * w), *b = malloc(sizeof(float) * h * w);
        EXPECTF(post_upscale(lr, 256, nh, nw, h, w, a, &e) == 0, "%s", e.msg);
        EXPECTF(post_upscale_ref(lr, 256, nh, nw, h, w, b, &e) == 0, "%s", e.msg);
        EXPECTF(!memcmp(a, b, sizeof(float) * h * w), "fused != two-step for %dx%d", w, h);
        free(a);
        free(b);
    }
    EXPECTF(post_upscale(lr, 256, 0, 5, 5, 5, lr, &e) == ERR_INVALID, "bad sizes rejected");
    free(lr);
    /* constant field stays constant; a 2x2 → 4x4 resize matches hand values */
    float src[4] = {0, 1, 2, 3}, dst[16];
    post_resize_bilinear(src, 2, 2, dst, 4, 4);
    /* row 0: y src = -0.25 → 0; x: -0.25→0, 0.25, 0.75, 1.25→(1, 1) */
    EXPECTF(dst[0] == 0.0f && dst[1] == 0.25f && dst[2] == 0.75f && dst[3] == 1.0f,
            "2x2→4x4 row 0");
    EXPECTF(dst[15] == 3.0f && dst[4] == 0.5f, "2x2→4x4 corners (%g %g)", dst[15], dst[4]);
    float lg[6] = {-2, -0.5f, 0.5f, 1.5f, 3, 0};
    uint8_t m[6];
    EXPECTF(post_threshold(lg, 6, 0, m) == 3 && m[0] == 0 && m[2] == 255, "threshold");
    EXPECTF(post_stability(lg, 6, 0, 1) == 0.4f, "stability 2/5 = %g", post_stability(lg, 6, 0, 1));
    float neg[2] = {-5, -5};
    EXPECTF(post_stability(neg, 2, 0, 1) == 0.0f, "stability with empty union");
    prep_info_t pi = {.h = 460, .w = 1130, .new_h = 417, .new_w = 1024};
    float ox, oy;
    prep_map_point(&pi, 565, 230, &ox, &oy);
    EXPECTF(ox == (float)(565 * (1024.0 / 1130)) && oy == (float)(230 * (417.0 / 460)),
            "point map");
    int nh, nw;
    prep_target_size(460, 1130, 1024, &nh, &nw);
    EXPECTF(nh == 417 && nw == 1024, "target size 1130x460 → %dx%d", nw, nh);
}

/* The decoder's prompt list: mapped points, then box corners (2, 3), else padding (-1). */
static void test_prompt_points(void)
{
    err_t e = {0};
    prep_info_t pi = {.h = 460, .w = 1130, .new_h = 417, .new_w = 1024};
    sam_point_t out[SAM_MAX_POINTS + 2];
    float pts[6] = {565, 230, 1, 10, 20, 0};
    sam_prompt_t p = {.points = pts, .n_points = 2};
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == 3, "2 points -> 3 decoder points");
    EXPECTF(out[0].label == 1 && out[1].label == 0 && out[2].label == -1 && out[2].x == 0 &&
                out[2].y == 0,
            "labels and padding point");
    EXPECTF(out[0].x == (float)(565 * (1024.0 / 1130)) && out[1].y == (float)(20 * (417.0 / 460)),
            "point mapping");
    p.has_box = 1;
    p.box[0] = 100, p.box[1] = 50, p.box[2] = 1130, p.box[3] = 460;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == 4, "2 points + box -> 4");
    EXPECTF(out[2].label == 2 && out[3].label == 3 && out[3].x == 1024.0f && out[3].y == 417.0f,
            "box corners follow the points, no padding");
    p.n_points = 0;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == 2 && out[0].label == 2, "box only");
    p.has_box = 0;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == ERR_INVALID, "no prompt: %s", e.msg);
    pts[0] = 1131;
    p.n_points = 1;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == ERR_RANGE && strstr(e.msg, "outside"),
            "outside: %s", e.msg);
    pts[0] = 5;
    pts[2] = 2;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == ERR_INVALID, "label 2 from a user: %s", e.msg);
    pts[2] = 1;
    p.has_box = 1;
    p.box[0] = 200, p.box[2] = 100;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == ERR_INVALID, "inverted box: %s", e.msg);
    p.box[0] = NAN;
    EXPECTF(sam_prompt_points(&pi, &p, out, &e) == ERR_RANGE, "NaN box: %s", e.msg);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_image DATA_DIR WORK_DIR\n");
        return 2;
    }
    mkdir(argv[2], 0755);
    test_malformed(argv[1], argv[2]);
    test_png_roundtrip(argv[2]);
    test_post();
    test_prompt_points();
    if (expect_failures) {
        fprintf(stderr, "test_image: %d check(s) failed\n", expect_failures);
        return 1;
    }
    printf("test_image: all checks passed\n");
    return 0;
}
