/* bench_vit.c — full ViT-B key set check and forward timing.
 *
 *   bench_vit VITB.pth MANIFEST [REPS [THREADS]]
 *
 * Converts the checkpoint (written by `ref_vit.py vitb`: official ViT-B key names and
 * shapes, random weights) to a native file next to it, reopens that file, checks every key
 * and shape of the manifest (written by PyTorch) is there, that the encoder is detected as
 * vit_b (C 768, depth 12, 12 heads, global {2,5,8,11}), then times REPS (default 1)
 * forwards of a 1024×1024 input and checks the outputs are finite. When the PyTorch
 * golden (vitb_img.bin, vitb_emb.bin, vitb_early.bin next to the .pth) exists, the input is
 * that image and emb / early must match within 1e-4 relative. Exit 1 on any failure.
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

/* Reads n floats from <dir of pth>/<name>; NULL when absent. */
static float *golden(const char *pth, const char *name, size_t n)
{
    char p[1200];
    const char *sl = strrchr(pth, '/');
    snprintf(p, sizeof p, "%.*s%s", sl ? (int)(sl - pth + 1) : 0, pth, name);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    float *b = malloc(n * sizeof(float));
    if (b && fread(b, sizeof(float), n, f) != n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static int compare(const char *what, const float *got, const float *ref, size_t n)
{
    double mx = 0, mref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= mx)) mx = d;
        if (fabs(ref[i]) > mref) mref = fabs(ref[i]);
    }
    double rel = mx / (mref > 0 ? mref : 1);
    printf("ViT-B vs PyTorch %-6s max|err| %.3g max|ref| %.3g rel %.3g %s\n", what, mx, mref, rel, rel <= 1e-4 ? "ok" : "FAIL");
    return rel <= 1e-4 ? 0 : 1;
}
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
    float *gimg = golden(argv[1], "vitb_img.bin", nimg);
    float *gemb = gimg ? golden(argv[1], "vitb_emb.bin", nemb) : NULL;
    float *gearly = gimg ? golden(argv[1], "vitb_early.bin", (size_t)VIT_TOKENS * 768) : NULL;
    if (gimg) memcpy(img, gimg, nimg * sizeof(float));
    unsigned s = 1;
    for (size_t i = 0; !gimg && i < nimg; i++) { s = s * 1664525u + 1013904223u; img[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f; }
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
    if (gemb && gearly) {
        fails += compare("emb", emb, gemb, nemb);
        fails += compare("early", early, gearly, (size_t)VIT_TOKENS * 768);
    } else {
        printf("no PyTorch golden next to the checkpoint: numerics not compared\n");
    }
    free(gimg); free(gemb); free(gearly);
    vit_destroy(&v);
    wts_destroy(&w);
    remove(out);
    free(img); free(emb); free(early);
    if (fails) return 1;
    printf("bench_vit: ok\n");
    return 0;
}
