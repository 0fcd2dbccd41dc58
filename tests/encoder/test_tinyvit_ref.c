/* test_tinyvit_ref.c — TinyViT-5M encoder against a golden embedding from onnxruntime.
 *
 *   test_tinyvit_ref WEIGHTS.safetensors INPUT.f32 GOLDEN.f32 [--tol 1e-3] [--early OUT.f32]
 *                    [--early-golden EARLY.f32]
 *
 * INPUT is 1×3×1024×1024 float32 (tests/ref/ref_preprocess.py), GOLDEN 1×256×64×64 from
 * `node tests/ref/ort_run.js encoder`, EARLY 4096×160 token-major from ort_early.js.
 * Prints the relative L2 error and max abs error of the embedding (and of `early`); exits
 * 1 when a relative L2 error exceeds the tolerance, 2 on bad usage or unreadable files.
 * Driven by run_ref.sh (ctest label `ref`).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sam_parts.h"

static float *read_f32(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    float *p = malloc(n * sizeof(float));
    size_t got = p ? fread(p, sizeof(float), n, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) {
        fprintf(stderr, "%s: expected exactly %zu float32 values\n", path, n);
        free(p);
        return NULL;
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 4 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: %s WEIGHTS INPUT.f32 GOLDEN.f32 [--tol T] [--early OUT.f32]\n", argv[0]);
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    double tol = 1e-3;
    const char *early_path = NULL, *early_gold_path = NULL;
    for (int i = 4; i < argc; i += 2) {
        if (i + 1 >= argc) {
            fprintf(stderr, "%s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--tol")) tol = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--early")) early_path = argv[i + 1];
        else if (!strcmp(argv[i], "--early-golden")) early_gold_path = argv[i + 1];
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    size_t nin = (size_t)3 * SAM_IMG * SAM_IMG, nemb = (size_t)SAM_EMB_C * SAM_EMB * SAM_EMB;
    float *x = read_f32(argv[2], nin), *gold = read_f32(argv[3], nemb);
    if (!x || !gold) return 2;
    err_t err = {0};
    wts_t *w = wts_open(argv[1], &err);
    if (!w) {
        fprintf(stderr, "weights: %s\n", err.msg);
        return 2;
    }
    tinyvit_t *e = tinyvit_new(w, &err);
    if (!e) {
        fprintf(stderr, "tinyvit_new: %s\n", err.msg);
        return 1;
    }
    float *emb = malloc(nemb * sizeof(float)), *early = malloc((size_t)160 * 64 * 64 * sizeof(float));
    if (!emb || !early) return 2;
    if (tinyvit_forward(e, x, emb, early, &err)) {
        fprintf(stderr, "tinyvit_forward: %s\n", err.msg);
        return 1;
    }
    double num = 0, den = 0, maxabs = 0;
    int finite = 1;
    for (size_t i = 0; i < nemb; i++) {
        double d = (double)emb[i] - gold[i];
        if (!isfinite(emb[i])) finite = 0;
        num += d * d;
        den += (double)gold[i] * gold[i];
        if (fabs(d) > maxabs) maxabs = fabs(d);
    }
    double early_ss = 0;
    for (size_t i = 0; i < (size_t)160 * 64 * 64; i++) {
        if (!isfinite(early[i])) finite = 0;
        early_ss += (double)early[i] * early[i];
    }
    double rel = sqrt(num / (den > 0 ? den : 1));
    int ok = rel <= tol && finite;
    if (early_gold_path) {
        float *eg = read_f32(early_gold_path, (size_t)4096 * 160);
        if (!eg) return 2;
        double en = 0, ed = 0;
        for (int p = 0; p < 4096; p++)
            for (int c = 0; c < 160; c++) {
                double dd = (double)early[(size_t)c * 4096 + p] - eg[(size_t)p * 160 + c];
                en += dd * dd;
                ed += (double)eg[(size_t)p * 160 + c] * eg[(size_t)p * 160 + c];
            }
        double erel = sqrt(en / (ed > 0 ? ed : 1));
        printf("early   rel_l2=%.3e tol=%.1e %s\n", erel, tol, erel <= tol ? "PASS" : "FAIL");
        if (!(erel <= tol)) ok = 0;
        free(eg);
    }
    printf("encoder rel_l2=%.3e max_abs=%.3e tol=%.1e early_rms=%.4f %s\n", rel, maxabs, tol,
           sqrt(early_ss / (160.0 * 64 * 64)), rel <= tol && finite ? "PASS" : "FAIL");
    if (early_path) {
        FILE *f = fopen(early_path, "wb");
        if (!f || fwrite(early, sizeof(float), (size_t)160 * 64 * 64, f) != (size_t)160 * 64 * 64) return 2;
        fclose(f);
    }
    tinyvit_destroy(&e);
    wts_destroy(&w);
    free(x);
    free(gold);
    free(emb);
    free(early);
    return ok ? 0 : 1;
}
