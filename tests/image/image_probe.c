/* image_probe.c — exposes image/preprocess/postprocess to test_vs_pil.py, which compares
 * every output against PIL / numpy / PyTorch. Raw files are headerless.
 *
 *   image_probe decode IMG OUT.rgb          RGB bytes of image_load+image_to_rgb; prints "w h c"
 *   image_probe resize LIST                 each line "IN.rgb w h NW NH OUT.rgb" (RGB uint8)
 *   image_probe prep IMG OUT.f32 OUT.rgb    prep_sam_input; prints "h w new_h new_w"
 *   image_probe post IN.f32 LR NEWH NEWW H W OUT.f32   post_upscale (checked == ref)
 * Exit 0 on success, 1 with the error message on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "postprocess.h"
#include "preprocess.h"

static void *read_all(const char *path, size_t want)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *b = malloc(want ? want : 1);
    size_t got = b ? fread(b, 1, want, f) : 0;
    fclose(f);
    if (got != want) {
        free(b);
        return NULL;
    }
    return b;
}

static int write_all(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t put = fwrite(b, 1, n, f);
    return (fclose(f) == 0 && put == n) ? 0 : -1;
}

static int fail(const char *what, const err_t *e)
{
    fprintf(stderr, "image_probe: %s: %s\n", what, e ? e->msg : "failed");
    return 1;
}

int main(int argc, char **argv)
{
    err_t e = {0};
    if (argc == 4 && !strcmp(argv[1], "decode")) {
        image_t *im = image_load(argv[2], &e);
        if (!im) return fail(argv[2], &e);
        image_t *rgb = image_to_rgb(im, &e);
        if (!rgb) return fail("to_rgb", &e);
        printf("%d %d %d\n", im->w, im->h, im->c);
        int rc = write_all(argv[3], rgb->data, (size_t)rgb->w * rgb->h * 3);
        image_destroy(&im);
        image_destroy(&rgb);
        return rc ? fail(argv[3], NULL) : 0;
    }
    if (argc == 3 && !strcmp(argv[1], "resize")) {
        FILE *f = fopen(argv[2], "r");
        if (!f) return fail(argv[2], NULL);
        char in[4096], out[4096];
        int w, h, nw, nh, n = 0;
        while (fscanf(f, "%4095s %d %d %d %d %4095s", in, &w, &h, &nw, &nh, out) == 6) {
            uint8_t *src = read_all(in, (size_t)w * h * 3);
            uint8_t *dst = malloc((size_t)nw * nh * 3);
            if (!src || !dst) return fail(in, NULL);
            if (prep_resize_bilinear(src, w, h, 3, dst, nw, nh, &e)) return fail(in, &e);
            if (write_all(out, dst, (size_t)nw * nh * 3)) return fail(out, NULL);
            free(src);
            free(dst);
            n++;
        }
        fclose(f);
        printf("%d\n", n);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "prep")) {
        image_t *im = image_load(argv[2], &e);
        if (!im) return fail(argv[2], &e);
        float *x = malloc(sizeof(float) * 3 * 1024 * 1024);
        uint8_t *r = malloc(1024 * 1024 * 3);
        prep_info_t pi;
        if (!x || !r || prep_sam_input(im, x, r, &pi, &e)) return fail("prep", &e);
        printf("%d %d %d %d\n", pi.h, pi.w, pi.new_h, pi.new_w);
        if (write_all(argv[3], x, sizeof(float) * 3 * 1024 * 1024) ||
            write_all(argv[4], r, (size_t)pi.new_w * pi.new_h * 3))
            return fail("write", NULL);
        free(x);
        free(r);
        image_destroy(&im);
        return 0;
    }
    if (argc == 9 && !strcmp(argv[1], "post")) {
        int lr = atoi(argv[3]), nh = atoi(argv[4]), nw = atoi(argv[5]), h = atoi(argv[6]),
            w = atoi(argv[7]);
        float *in = read_all(argv[2], sizeof(float) * lr * lr);
        float *a = malloc(sizeof(float) * h * w), *b = malloc(sizeof(float) * h * w);
        if (!in || !a || !b) return fail(argv[2], NULL);
        if (post_upscale(in, lr, nh, nw, h, w, a, &e) || post_upscale_ref(in, lr, nh, nw, h, w, b, &e))
            return fail("post", &e);
        if (memcmp(a, b, sizeof(float) * h * w)) {
            fprintf(stderr, "image_probe: fused and two-step upscale differ\n");
            return 1;
        }
        if (write_all(argv[8], a, sizeof(float) * h * w)) return fail(argv[8], NULL);
        free(in);
        free(a);
        free(b);
        return 0;
    }
    fprintf(stderr, "usage: image_probe decode|resize|prep|post ... (see the file header)\n");
    return 2;
}
