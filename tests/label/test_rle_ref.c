/* test_rle_ref — the C side of rle_ref.py: reads its manifest (`png h w counts area bbox…`),
 * and for each mask checks that rle encodes the PNG to exactly the Python string, decodes the
 * Python string to exactly the PNG's pixels, and agrees on area and bbox. Writes its own
 * strings, one a line, to OUT for the Python side to decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/t_check.h"
#include "image.h"
#include "rle.h"

int main(int argc, char **argv)
{
    t_watchdog(120);
    if (argc != 3) {
        fprintf(stderr, "usage: test_rle_ref MANIFEST OUT\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r"), *o = fopen(argv[2], "w");
    if (!f || !o) {
        perror("test_rle_ref");
        return 1;
    }
    size_t cap = 1 << 22;
    char *line = malloc(cap), *path = malloc(4096), *counts = malloc(cap);
    int n = 0, bad = 0;
    while (fgets(line, (int)cap, f)) {
        unsigned h, w, bb[4];
        unsigned long long area;
        if (sscanf(line, "%4095s %u %u %s %llu %u %u %u %u", path, &h, &w, counts, &area, &bb[0], &bb[1], &bb[2],
                   &bb[3]) != 9)
            continue;
        n++;
        err_t err = {0};
        image_t *im = image_load(path, &err);
        T(im && im->c == 1 && (unsigned)im->h == h && (unsigned)im->w == w);
        if (!im) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
            bad++;
            continue;
        }
        uint8_t *m = malloc((size_t)h * w);
        for (size_t i = 0; i < (size_t)h * w; i++) m[i] = im->data[i] != 0;
        char *s = NULL;
        uint8_t *d = NULL;
        int ok = !rle_encode_string(m, h, w, &s, &err) && !strcmp(s, counts) &&
                 !rle_decode_string(counts, h, w, &d, &err) && !memcmp(d, m, (size_t)h * w);
        rle_t r;
        uint32_t rb[4];
        ok = ok && !rle_from_string(counts, strlen(counts), h, w, &r, &err) && rle_area(&r) == area;
        if (ok) {
            rle_bbox(&r, rb);
            ok = rb[0] == bb[0] && rb[1] == bb[1] && rb[2] == bb[2] && rb[3] == bb[3];
            rle_free(&r);
        }
        if (!ok && bad++ < 5) fprintf(stderr, "mismatch on %s (%ux%u): %s\n", path, w, h, err.msg);
        T(ok);
        fprintf(o, "%s\n", s ? s : "");
        free(s);
        free(d);
        free(m);
        image_destroy(&im);
    }
    T(n > 0);
    printf("test_rle_ref: %d masks checked\n", n);
    fclose(f);
    fclose(o);
    free(line);
    free(path);
    free(counts);
    return t_done("test_rle_ref");
}
