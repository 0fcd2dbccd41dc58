/* test_pth_ref.c — .pth conversion against PyTorch-written fixtures (ref_vit.py small):
 *   - small ViT state dict nested under "model" -> native file: every tensor bit-equal,
 *     metadata set, encoder "vit_custom" with C 128 / depth 4;
 *   - f16 checkpoint equals the f32 checkpoint of the same values rounded to f16;
 *   - the same checkpoint rewritten with zip64 records everywhere reads identically;
 *   - MobileSAM-style Conv2d_BN fragment: BN folded (eps 1e-5), conv with the folded
 *     weights matches torch's eval-mode conv+bn output; bn.* / num_batches_tracked /
 *     attention_bias_idxs gone, attention_biases kept, encoder "tinyvit_5m";
 *   - hostile files rejected with the right code and a message naming the problem.
 * Usage: test_pth_ref FIXTURE_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"
#include "pth.h"
#include "expect.h"

static const char *dir;

static const char *fx(const char *name)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static float *load(const char *name, size_t n)
{
    FILE *f = fopen(fx(name), "rb");
    if (!f) { fprintf(stderr, "FAIL cannot open %s\n", name); exit(1); }
    float *b = malloc(n * sizeof(float));
    if (fread(b, sizeof(float), n, f) != n) { fprintf(stderr, "FAIL short %s\n", name); exit(1); }
    fclose(f);
    return b;
}

/* Converts a checkpoint to a wts_t in memory. */
static wts_t *convert(const char *name, pth_sam_info_t *si)
{
    err_t e = {0};
    pth_t *p = pth_open(fx(name), &e);
    if (!p) {
        fprintf(stderr, "FAIL open %s: %s\n", name, e.msg);
        expect_failures++;
        return NULL;
    }
    wts_writer_t *wr = wts_writer_new();
    void *mem = NULL;
    size_t len = 0;
    wts_t *w = NULL;
    if (pth_convert_sam(p, wr, name, si, &e) == 0 && wts_writer_to_memory(wr, &mem, &len, &e) == 0)
        w = wts_from_memory(mem, len, &e);
    if (!w) {
        fprintf(stderr, "FAIL convert %s: %s\n", name, e.msg);
        expect_failures++;
    }
    free(mem);
    wts_writer_destroy(&wr);
    pth_destroy(&p);
    return w;
}

static void check_small(void)
{
    pth_sam_info_t si;
    wts_t *w = convert("small.pth", &si);
    if (!w) return;
    EXPECT(!strcmp(si.encoder, "vit_custom") && si.embed_dim == 128 && si.depth == 4);
    EXPECT(wts_meta(w, "moda.kind") && !strcmp(wts_meta(w, "moda.kind"), "sam-weights"));
    EXPECT(wts_meta(w, "moda.encoder") && !strcmp(wts_meta(w, "moda.encoder"), "vit_custom"));
    err_t e = {0};
    pth_t *p = pth_open(fx("small.pth"), &e);
    EXPECT(p && pth_count(p) == wts_count(w) && si.n_tensors == pth_count(p));
    for (int i = 0; p && i < pth_count(p); i++) {
        const pth_tensor_t *t = pth_at(p, i);
        const wts_tensor_t *o = wts_find(w, t->name);
        if (!o) {
            fprintf(stderr, "FAIL missing %s\n", t->name);
            expect_failures++;
            continue;
        }
        int same = o->ndim == t->ndim && o->dtype == WTS_F32;
        for (int d = 0; same && d < t->ndim; d++) same = o->shape[d] == t->shape[d];
        float *buf = malloc((size_t)t->numel * 4);
        same = same && pth_read_f32(p, i, buf, &e) == 0 && memcmp(buf, o->data, (size_t)t->numel * 4) == 0;
        free(buf);
        if (!same) {
            fprintf(stderr, "FAIL %s differs\n", t->name);
            expect_failures++;
        }
    }
    pth_destroy(&p);
    wts_destroy(&w);
    /* f16 checkpoint == f32 checkpoint of the f16-rounded values */
    wts_t *a = convert("small_f16.pth", NULL), *b = convert("small_f16_as_f32.pth", NULL);
    EXPECT(a && b && wts_count(a) == wts_count(b));
    int nbad = 0;
    for (int i = 0; a && b && i < wts_count(a); i++) {
        const wts_tensor_t *ta = wts_at(a, i), *tb = wts_find(b, ta->name);
        if (!tb || ta->nbytes != tb->nbytes || memcmp(ta->data, tb->data, ta->nbytes)) nbad++;
    }
    EXPECT(nbad == 0);
    printf("small.pth: %d tensors bit-equal after conversion; f16 checkpoint: %d mismatching tensors\n", si.n_tensors, nbad);
    wts_destroy(&a);
    wts_destroy(&b);
    /* zip64 records everywhere (what torch writes past 4 GiB) read the same */
    a = convert("small.pth", NULL);
    b = convert("small_zip64.pth", NULL);
    nbad = a && b && wts_count(a) == wts_count(b) ? 0 : 1;
    for (int i = 0; !nbad && i < wts_count(a); i++) {
        const wts_tensor_t *ta = wts_at(a, i), *tb = wts_find(b, ta->name);
        if (!tb || ta->nbytes != tb->nbytes || memcmp(ta->data, tb->data, ta->nbytes)) nbad++;
    }
    EXPECT(nbad == 0);
    printf("small_zip64.pth: %s\n", nbad ? "differs" : "identical to small.pth");
    wts_destroy(&a);
    wts_destroy(&b);
}

static void compare(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double mx = 0, mref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= mx)) mx = d;
        if (fabs(ref[i]) > mref) mref = fabs(ref[i]);
    }
    int ok = mx / (mref > 0 ? mref : 1) <= tol;
    printf("%-34s max|err| %.3g max|ref| %.3g %s\n", what, mx, mref, ok ? "ok" : "FAIL");
    if (!ok) expect_failures++;
}

static void check_tinyvit(void)
{
    pth_sam_info_t si;
    wts_t *w = convert("tinyvit_frag.pth", &si);
    if (!w) return;
    EXPECT(!strcmp(si.encoder, "tinyvit_5m") && si.n_bn_folded == 2 && si.n_dropped == 3);
    EXPECT(!strcmp(wts_meta(w, "moda.encoder"), "tinyvit_5m"));
    for (int i = 0; i < wts_count(w); i++) {
        const char *n = wts_at(w, i)->name;
        if (strstr(n, ".bn.") || strstr(n, "idxs") || strstr(n, "num_batches")) {
            fprintf(stderr, "FAIL kept %s\n", n);
            expect_failures++;
        }
    }
    EXPECT(wts_count(w) == 6);
    err_t e = {0};
    const float *w0 = wts_f32(w, "image_encoder.patch_embed.seq.0.c.weight", &e, 4, 16, 3, 3, 3);
    const float *b0 = wts_f32(w, "image_encoder.patch_embed.seq.0.c.bias", &e, 1, 16);
    const float *w1 = wts_f32(w, "image_encoder.layers.0.blocks.0.conv1.c.weight", &e, 4, 32, 16, 1, 1);
    const float *b1 = wts_f32(w, "image_encoder.layers.0.blocks.0.conv1.c.bias", &e, 1, 32);
    EXPECT(wts_find(w, "image_encoder.layers.1.blocks.0.attn.attention_biases") != NULL);
    if (!w0 || !b0 || !w1 || !b1) {
        fprintf(stderr, "FAIL folded tensors: %s\n", e.msg);
        expect_failures++;
        wts_destroy(&w);
        return;
    }
    float *x = load("tv_x.bin", 3 * 32 * 32), *y0 = load("tv_y0.bin", 16 * 16 * 16), *y1 = load("tv_y1.bin", 32 * 16 * 16);
    float *got = malloc(32 * 16 * 16 * sizeof(float));
    float *scr = malloc(kn_conv2d_scratch(3, 32, 32, 3, 2, 1, 1) * sizeof(float) + 64);
    kn_conv2d_fwd(got, x, w0, b0, 3, 32, 32, 16, 3, 2, 1, 1, scr);
    compare("BN-folded conv3x3 s2 vs torch eval", got, y0, 16 * 16 * 16, 1e-5);
    kn_conv2d_fwd(got, y0, w1, b1, 16, 16, 16, 32, 1, 1, 0, 1, NULL);
    compare("BN-folded conv1x1 vs torch eval", got, y1, 32 * 16 * 16, 1e-5);
    free(x); free(y0); free(y1); free(got); free(scr);
    wts_destroy(&w);
}

static void expect_reject(const char *name, int code, const char *needle)
{
    err_t e = {0};
    pth_t *p = pth_open(fx(name), &e);
    int ok = !p && e.code == code && strstr(e.msg, needle);
    printf("%-20s -> %s: %s\n", name, ok ? "rejected" : "FAIL", e.msg);
    if (!ok) expect_failures++;
    pth_destroy(&p);
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: test_pth_ref FIXTURE_DIR\n"); return 2; }
    dir = argv[1];
    check_small();
    check_tinyvit();
    expect_reject("bad_deflated.pth", ERR_UNSUPPORTED, "compressed");
    expect_reject("bad_truncated.pth", ERR_FORMAT, "truncated");
    expect_reject("bad_notzip.pth", ERR_FORMAT, "not a zip");
    expect_reject("bad_legacy.pth", ERR_UNSUPPORTED, "legacy");
    expect_reject("bad_script.pt", ERR_UNSUPPORTED, "TorchScript");
    expect_reject("bad_evil.pth", ERR_UNSUPPORTED, "refused");
    expect_reject("bad_view.pth", ERR_FORMAT, "exceeds storage");
    expect_reject("does_not_exist.pth", ERR_IO, "cannot open");
    if (expect_failures) {
        fprintf(stderr, "%d failures\n", expect_failures);
        return 1;
    }
    printf("test_pth_ref: ok\n");
    return 0;
}
