/* test_vit_ref.c — ViT encoder against the independent PyTorch reference (ref_vit.py):
 * kn_relpos_attention_fwd (windowed S=14 with 3 windows/3 heads/d 16; S=32 with d 80 as in
 * ViT-H), then a small ViT (C=128, depth 4, global blocks {1,3}) converted from its .pth:
 * patch embed, every block fed the reference input, neck, and the full forward (emb and the
 * early tap). Each comparison reports max |err| and max |err| / max |ref| and must stay
 * within 1e-4 relative. Usage: test_vit_ref FIXTURE_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kn.h"
#include "pth.h"
#include "sam_vit.h"

static int fails;
static const char *dir;

static float *load(const char *name, size_t n)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) { fprintf(stderr, "FAIL cannot open %s\n", p); exit(1); }
    float *b = malloc(n * sizeof(float));
    size_t got = fread(b, sizeof(float), n, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) { fprintf(stderr, "FAIL %s: size mismatch (%zu floats read, want %zu)\n", p, got, n); exit(1); }
    return b;
}

static void compare(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double mx = 0, mref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= mx)) mx = d; /* NaN propagates */
        if (fabs(ref[i]) > mref) mref = fabs(ref[i]);
    }
    double rel = mx / (mref > 0 ? mref : 1);
    int ok = rel <= tol;
    printf("%-28s max|err| %.3g  max|ref| %.3g  rel %.3g  %s\n", what, mx, mref, rel, ok ? "ok" : "FAIL");
    if (!ok) fails++;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void op_test(const char *tag, int nwin, int S, int heads, int d)
{
    int C = heads * d, N = S * S;
    char nm[64];
    snprintf(nm, sizeof nm, "op_%s_qkv.bin", tag);
    float *qkv = load(nm, (size_t)nwin * N * 3 * C);
    snprintf(nm, sizeof nm, "op_%s_rh.bin", tag);
    float *rh = load(nm, (size_t)(2 * S - 1) * d);
    snprintf(nm, sizeof nm, "op_%s_rw.bin", tag);
    float *rw = load(nm, (size_t)(2 * S - 1) * d);
    snprintf(nm, sizeof nm, "op_%s_out.bin", tag);
    float *ref = load(nm, (size_t)nwin * N * C);
    float *out = malloc((size_t)nwin * N * C * sizeof(float));
    int th = kn_get_threads();
    float *scr = malloc(kn_relpos_attention_scratch(nwin, S, heads, d, th) * sizeof(float));
    kn_relpos_attention_fwd(out, qkv, rh, rw, nwin, S, heads, d, 1.0f / sqrtf((float)d), scr, th);
    snprintf(nm, sizeof nm, "relpos_attn S=%d d=%d", S, d);
    compare(nm, out, ref, (size_t)nwin * N * C, 1e-5);
    free(qkv); free(rh); free(rw); free(ref); free(out); free(scr);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: test_vit_ref FIXTURE_DIR\n"); return 2; }
    dir = argv[1];
    op_test("w", 3, 14, 3, 16);
    op_test("g", 1, 32, 2, 80);

    char path[1024];
    snprintf(path, sizeof path, "%s/small.pth", dir);
    err_t e = {0};
    pth_t *p = pth_open(path, &e);
    if (!p) { fprintf(stderr, "FAIL %s\n", e.msg); return 1; }
    wts_writer_t *wr = wts_writer_new();
    pth_sam_info_t si;
    void *mem = NULL;
    size_t len = 0;
    if (pth_convert_sam(p, wr, "small.pth", &si, &e) < 0 || wts_writer_to_memory(wr, &mem, &len, &e) < 0) {
        fprintf(stderr, "FAIL convert: %s\n", e.msg);
        return 1;
    }
    pth_destroy(&p);
    wts_writer_destroy(&wr);
    wts_t *w = wts_from_memory(mem, len, &e);
    free(mem);
    if (!w) { fprintf(stderr, "FAIL wts: %s\n", e.msg); return 1; }
    vit_t *v = vit_new(w, &e);
    if (!v) { fprintf(stderr, "FAIL vit_new: %s\n", e.msg); return 1; }
    vit_info_t inf;
    vit_get_info(v, &inf);
    printf("small vit: C %d depth %d heads %d head_dim %d mlp %d first_global %d mask 0x%llx\n", inf.embed_dim,
           inf.depth, inf.heads, inf.head_dim, inf.mlp_dim, inf.first_global, inf.global_mask);
    if (!(inf.embed_dim == 128 && inf.depth == 4 && inf.heads == 2 && inf.head_dim == 64 && inf.mlp_dim == 512 &&
          inf.first_global == 1 && inf.global_mask == 0xA && vit_early_channels(v) == 128)) {
        fprintf(stderr, "FAIL derived configuration\n");
        fails++;
    }
    int C = inf.embed_dim;
    size_t nx = (size_t)VIT_TOKENS * C;
    float *img = load("img.bin", (size_t)3 * SAM_IMG * SAM_IMG);
    float *x = malloc(nx * sizeof(float));
    float *ref = load("x0.bin", nx);
    vit_embed(v, img, x, &e);
    compare("patch_embed + pos", x, ref, nx, 1e-5);
    for (int i = 0; i < inf.depth; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "x%d.bin", i);
        float *in = load(nm, nx);
        snprintf(nm, sizeof nm, "x%d.bin", i + 1);
        float *out = load(nm, nx);
        memcpy(x, in, nx * sizeof(float));
        if (vit_block(v, i, x, &e) < 0) { fprintf(stderr, "FAIL block %d: %s\n", i, e.msg); fails++; }
        snprintf(nm, sizeof nm, "block %d (%s)", i, (inf.global_mask >> i) & 1 ? "global" : "window 14");
        compare(nm, x, out, nx, 1e-4);
        free(in);
        free(out);
    }
    float *x4 = load("x4.bin", nx);
    float *emb = malloc((size_t)SAM_EMB_C * VIT_TOKENS * sizeof(float));
    float *emb_ref = load("emb.bin", (size_t)SAM_EMB_C * VIT_TOKENS);
    vit_neck(v, x4, emb, &e);
    compare("neck", emb, emb_ref, (size_t)SAM_EMB_C * VIT_TOKENS, 1e-4);
    float *early = malloc(nx * sizeof(float));
    float *early_ref = load("early.bin", nx);
    memset(emb, 0, (size_t)SAM_EMB_C * VIT_TOKENS * sizeof(float));
    double t0 = now();
    int rc = vit_forward(v, img, emb, early, &e);
    double t1 = now();
    if (rc < 0) { fprintf(stderr, "FAIL forward: %s\n", e.msg); fails++; }
    compare("full forward: emb", emb, emb_ref, (size_t)SAM_EMB_C * VIT_TOKENS, 1e-4);
    compare("full forward: early", early, early_ref, nx, 1e-4);
    printf("small vit forward: %.3f s (%d threads)\n", t1 - t0, kn_get_threads());
    if (vit_forward(v, NULL, emb, NULL, &e) != ERR_INVALID) { fprintf(stderr, "FAIL NULL input accepted\n"); fails++; }
    if (vit_block(v, 99, x, &e) != ERR_RANGE) { fprintf(stderr, "FAIL bad block index accepted\n"); fails++; }
    vit_destroy(&v);
    wts_destroy(&w);
    free(img); free(x); free(ref); free(x4); free(emb); free(emb_ref); free(early); free(early_ref);
    if (fails) { fprintf(stderr, "%d failures\n", fails); return 1; }
    printf("test_vit_ref: ok\n");
    return 0;
}
