/* fuzz_image.c — fuzz target for the image decoders (image_decode → image_to_rgb →
 * SAM preprocessing of small results), and its corpus replay as an ordinary test.
 *
 *   libFuzzer:  clang -DMODA_LIBFUZZER -fsanitize=fuzzer,address ... (LLVMFuzzerTestOneInput)
 *   replay:     fuzz_image [--mutations N] [--make-seeds DIR] FILE_OR_DIR...
 * Replay feeds every file (a directory: its first 8 regular files, sorted) and N
 * deterministic byte mutations and truncations of each; --make-seeds DIR first writes small
 * PNG seeds (gray, RGB, 1x1) with image_save_png into DIR, which is then replayed. Any return is fine; a crash,
 * sanitizer report or an image with a bad shape is the failure (exit 1).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image.h"
#include "preprocess.h"

static int bad_shape;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    image_t *im = image_decode(data, size, "fuzz", NULL);
    if (!im) return 0;
    if (im->w < 1 || im->h < 1 || (im->c != 1 && im->c != 3) ||
        (long long)im->w * im->h > IMAGE_MAX_PIXELS)
        bad_shape++;
    image_t *rgb = image_to_rgb(im, NULL);
    if (rgb && (long long)rgb->w * rgb->h <= 4096) { /* keep each input cheap */
        uint8_t out[16 * 16 * 3];
        prep_resize_bilinear(rgb->data, rgb->w, rgb->h, 3, out, 16, 16, NULL);
    }
    image_destroy(&rgb);
    image_destroy(&im);
    return 0;
}

#ifndef MODA_LIBFUZZER
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return NULL;
    }
    uint8_t *b = malloc(st.st_size ? (size_t)st.st_size : 1);
    *n = b ? fread(b, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    return b;
}

static int replay(const char *path, int mutations)
{
    size_t n = 0;
    uint8_t *b = slurp(path, &n);
    if (!b) return -1;
    LLVMFuzzerTestOneInput(b, n);
    uint8_t *m = malloc(n ? n : 1);
    unsigned seed = 2166136261u;
    for (const char *p = path; *p; p++) seed = (seed ^ (unsigned char)*p) * 16777619u;
    for (int it = 0; it < mutations && n > 0; it++) {
        memcpy(m, b, n);
        seed = seed * 1103515245u + 12345u;
        int flips = 1 + (seed >> 16) % 8;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 4) % n;
            /* mostly early bytes: headers are where parsers branch */
            if (k % 2 == 0 && n > 64) at %= 64;
            m[at] = (uint8_t)(seed >> 24);
        }
        seed = seed * 1103515245u + 12345u;
        size_t len = (it % 4 == 3) ? (seed >> 8) % n : n;
        LLVMFuzzerTestOneInput(m, len);
    }
    free(m);
    free(b);
    return 0;
}

/* Small PNG seeds written by our own encoder: gray, RGB, 1x1. */
static int make_seeds(const char *dir)
{
    mkdir(dir, 0755);
    int sizes[3][3] = {{7, 5, 1}, {16, 9, 3}, {1, 1, 3}};
    for (int s = 0; s < 3; s++) {
        image_t *im = image_new(sizes[s][0], sizes[s][1], sizes[s][2], NULL);
        if (!im) return -1;
        for (int i = 0; i < im->w * im->h * im->c; i++) im->data[i] = (uint8_t)(i * 29 + s);
        char path[4096];
        snprintf(path, sizeof path, "%s/seed%d.png", dir, s);
        int rc = image_save_png(im, path, NULL);
        image_destroy(&im);
        if (rc) return rc;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int mutations = 200, files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mutations") && i + 1 < argc) {
            mutations = atoi(argv[++i]);
            continue;
        }
        if (!strcmp(argv[i], "--make-seeds") && i + 1 < argc) {
            if (make_seeds(argv[i + 1])) {
                fprintf(stderr, "fuzz_image: cannot write seeds into %s\n", argv[i + 1]);
                return 1;
            }
            continue; /* the folder itself is replayed next */
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            if (replay(argv[i], mutations) == 0) files++;
            else fprintf(stderr, "fuzz_image: cannot read %s\n", argv[i]);
            continue;
        }
        char *names[512];
        int nn = 0;
        struct dirent *de;
        while ((de = readdir(d)) && nn < 512)
            if (de->d_name[0] != '.') names[nn++] = strdup(de->d_name);
        closedir(d);
        qsort(names, nn, sizeof *names, cmp_str);
        for (int k = 0; k < nn; k++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[k]);
            if (files < 1000 && k < 8 && replay(path, mutations) == 0) files++;
            free(names[k]);
        }
    }
    printf("fuzz_image: %d files x %d mutations replayed, %d bad shapes\n", files, mutations,
           bad_shape);
    return (files == 0 || bad_shape) ? 1 : 0;
}
#endif
