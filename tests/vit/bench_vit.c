/* bench_vit.c — full ViT-B key set check and forward timing.
 *
 *   bench_vit VITB.pth MANIFEST [REPS [THREADS]]
 *
 * Converts the checkpoint (written by `ref_vit.py vitb`: official ViT-B key names and
 * shapes, random weights) to a native file next to it, reopens that file, checks every key
 * and shape of the manifest (written by PyTorch) is there, that the encoder is detected as
 * vit_b (C 768, depth 12, 12 heads, global {2,5,8,11}), then times REPS (default 1)
 * forwards of a 1024×1024 input and checks the outputs are finite. Exit 1 on any failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kn.h"
#include "pth.h"
#include "sam_vit.h"

static double clk(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now(void) { return clk(CLOCK_MONOTONIC); }
static double cpu(void) { return clk(CLOCK_PROCESS_CPUTIME_ID); }

int main(int argc, char **argv)
{
    if (argc < 3 || !strcmp(argv[1], "--help")) {
        printf("usage: bench_vit VITB.pth MANIFEST [REPS [THREADS]]\n");
        return argc < 3 ? 2 : 0;
    }
    int reps = argc > 3 ? atoi(argv[3]) : 1;
    if (argc > 4) kn_set_threads(atoi(argv[4]));
    err_t e = {0};
    int fails = 0;
    double t0 = now();
    pth_t *p = pth_open(argv[1], &e);
    if (!p) { fprintf(stderr, "FAIL %s\n", e.msg); return 1; }
    wts_writer_t *wr = wts_writer_new();
    pth_sam_info_t si;
    char out[1100];
    snprintf(out, sizeof out, "%s.safetensors", argv[1]);
    if (pth_convert_sam(p, wr, argv[1], &si, &e) < 0 || wts_writer_save(wr, out, &e) < 0) {
        fprintf(stderr, "FAIL convert: %s\n", e.msg);
        return 1;
    }
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    double t1 = now();
    wts_t *w = wts_open(out, &e);
    if (!w) { fprintf(stderr, "FAIL reopen: %s\n", e.msg); return 1; }
    printf("converted %d tensors in %.2f s: encoder %s C %d depth %d\n", si.n_tensors, t1 - t0, si.encoder,
           si.embed_dim, si.depth);
    if (strcmp(si.encoder, "vit_b") || strcmp(wts_meta(w, "moda.encoder"), "vit_b")) { fprintf(stderr, "FAIL encoder\n"); fails++; }
    FILE *mf = fopen(argv[2], "r");
    if (!mf) { fprintf(stderr, "FAIL manifest\n"); return 1; }
    char line[2048];
    int nman = 0;
    while (fgets(line, sizeof line, mf)) {
        char name[1024];
        int nd, off = 0;
        if (sscanf(line, "%1023s %d%n", name, &nd, &off) < 2) continue;
        nman++;
        const wts_tensor_t *t = wts_find(w, name);
        int ok = t && t->ndim == nd && t->dtype == WTS_F32;
        char *s = line + off;
        for (int d = 0; ok && d < nd; d++) {
            long long v = strtoll(s, &s, 10);
            ok = t->shape[d] == v;
        }
        if (!ok) { fprintf(stderr, "FAIL key/shape %s\n", name); fails++; }
    }
    fclose(mf);
    if (nman != wts_count(w)) { fprintf(stderr, "FAIL %d manifest keys vs %d converted\n", nman, wts_count(w)); fails++; }
    printf("manifest: %d keys, all present with their shapes: %s\n", nman, fails ? "no" : "yes");
    vit_t *v = vit_new(w, &e);
    if (!v) { fprintf(stderr, "FAIL vit_new: %s\n", e.msg); return 1; }
    vit_info_t inf;
    vit_get_info(v, &inf);
    if (!(inf.embed_dim == 768 && inf.depth == 12 && inf.heads == 12 && inf.global_mask == 0x924 && inf.first_global == 2)) {
        fprintf(stderr, "FAIL derived configuration (heads %d mask 0x%llx)\n", inf.heads, inf.global_mask);
        fails++;
    }
    size_t nimg = (size_t)3 * SAM_IMG * SAM_IMG, nemb = (size_t)SAM_EMB_C * VIT_TOKENS;
    float *img = malloc(nimg * sizeof(float)), *emb = malloc(nemb * sizeof(float));
    float *early = malloc((size_t)VIT_TOKENS * 768 * sizeof(float));
    unsigned s = 1;
    for (size_t i = 0; i < nimg; i++) { s = s * 1664525u + 1013904223u; img[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f; }
    for (int r = 0; r < reps; r++) {
        double a = now(), ca = cpu();
        if (vit_forward(v, img, emb, early, &e) < 0) { fprintf(stderr, "FAIL forward: %s\n", e.msg); fails++; break; }
        double b = now(), cb = cpu();
        printf("ViT-B forward %d: %.2f s wall, %.2f s CPU on %d threads (%.1f GFLOP/s per CPU-second at 486 GMAC)\n",
               r, b - a, cb - ca, kn_get_threads(), 2 * 486.0 / (cb - ca));
    }
    int finite = 1;
    for (size_t i = 0; i < nemb; i++) finite &= isfinite(emb[i]) != 0;
    if (!finite) { fprintf(stderr, "FAIL non-finite output\n"); fails++; }
    vit_destroy(&v);
    wts_destroy(&w);
    remove(out);
    free(img); free(emb); free(early);
    if (fails) return 1;
    printf("bench_vit: ok\n");
    return 0;
}
